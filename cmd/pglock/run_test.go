package main

import (
	"bytes"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCLIRunExitStatus(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -KILL $$"}, exitSignal + int(syscall.SIGKILL)},
		{[]string{"/nonexistent/command"}, exitNoCommand},
		{[]string{"pglock-test-no-such-command"}, exitNoCommand},
		{[]string{os.TempDir()}, exitCannotExec},
	} {
		r := cli(t, append([]string{"--table", table, "run", "status", "--lease", "5s", "--"}, tc.argv...)...)
		assert.Equal(t, tc.want, r.code, "%q: %s", tc.argv, r.stderr)
		// The lock is released whatever the command did.
		assert.Equal(t, exitAbsent, cli(t, "--table", table, "get", "status").code, "%q left the lock held", tc.argv)
	}

	// Without "--", the command starts at the first argument after NAME;
	// it gets stdin, stdout and stderr.
	r := cliWithEnv(t, cliEnv(envDSN+"="+srv.DSN()), []byte("from stdin"),
		"--table", table, "run", "io", "sh", "-c", "cat; echo to-stderr >&2")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "from stdin", r.stdout)
	assert.Equal(t, "to-stderr\n", r.stderr)
}

// TestCLIRunNoOverlap runs two loops of `pglock run` of one name at once.
// Each command creates a marker file exclusively (set -C), holds it a
// while and removes it: a second command inside the lock at the same time
// would fail to create it.
func TestCLIRunNoOverlap(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	dir := t.TempDir()
	marker, log := filepath.Join(dir, "marker"), filepath.Join(dir, "log")
	script := `set -C; : > "$1" || exit 99; echo in >> "$2"; sleep 0.15; echo out >> "$2"; rm "$1"`
	const loops, runs = 2, 4
	var wg sync.WaitGroup
	start := time.Now()
	for range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range runs {
				r, err := cliExec(cliEnv(envDSN+"="+srv.DSN()), nil, "--table", table, "run", "shared", "--lease", "5s", "--", "sh", "-c", script, "sh", marker, log)
				assert.NoError(t, err)
				assert.Equal(t, exitOK, r.code, "overlap or failure: %s", r.stderr)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d runs of 150ms took %v", loops*runs, time.Since(start))
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("in\nout\n", loops*runs), string(b), "commands overlapped")
}

func TestCLIRunTryAndTimeout(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	c := cliClient(t, table, pglock.WithLeaseDuration(30*time.Second), pglock.WithHeartbeatFrequency(5*time.Second))
	l, err := c.Acquire("busy")
	require.NoError(t, err)
	defer l.Close()

	r := cli(t, "--table", table, "run", "busy", "--try", "--lease", "30s", "--", "sh", "-c", "echo ran")
	assert.Equal(t, exitHeld, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "held")
	assert.Less(t, r.took, 10*time.Second)

	r = cli(t, "--table", table, "run", "busy", "--timeout", "500ms", "--lease", "30s", "--", "sh", "-c", "echo ran")
	assert.Equal(t, exitTimeout, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.GreaterOrEqual(t, r.took, 500*time.Millisecond)
	assert.False(t, l.IsReleased())

	// A signal stops the wait. pglock catches signals before it connects,
	// so once its connection shows up in pg_stat_activity it is safe to
	// send one.
	app := "waiter_" + table
	dsn := srv.DSN() + "&application_name=" + app
	cmd := exec.Command(cliBin, "--table", table, "run", "busy", "--lease", "30s", "--", "sh", "-c", "echo ran")
	cmd.Env = cliEnv(envDSN + "=" + dsn)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	defer db.Close()
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, exitSignal+int(syscall.SIGTERM), waitExit(t, cmd), stderr.String())
	assert.Empty(t, stdout.String())
	assert.False(t, l.IsReleased())
}

// startRun starts `pglock run` in the background; the caller waits for it.
func startRun(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	cmd.Env = cliEnv(envDSN + "=" + srv.DSN())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stderr
}

// waitExit waits for cmd and returns its exit status.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatal("pglock run did not exit")
	}
	return cmd.ProcessState.ExitCode()
}

// TestCLIRunLockLost steals the lock of a running command, as an operator
// would (release --force, then someone else takes it): the command gets
// SIGTERM, and SIGKILL when it ignores SIGTERM, and pglock exits 123.
func TestCLIRunLockLost(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	thief := cliClient(t, table, pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	for _, tc := range []struct {
		name   string
		script string
		want   string
	}{
		// The trap kills the background sleep, so that no process outlives
		// the test holding its pipes.
		{"sigterm", `trap 'echo TERM > "$2"; kill $!; exit 0' TERM; : > "$1"; sleep 30 & wait`, "TERM\n"},
		// SIGTERM is ignored, and stays ignored across exec: only SIGKILL ends it.
		{"sigkill", `trap '' TERM; : > "$1"; exec sleep 30`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			up, got := filepath.Join(dir, "up"), filepath.Join(dir, "got")
			name := "stolen-" + tc.name
			cmd, stderr := startRun(t, "--table", table, "run", name, "--lease", "1s", "--grace", "500ms",
				"--", "sh", "-c", tc.script, "sh", up, got)
			waitFile(t, up)

			stolenAt := time.Now()
			require.NoError(t, thief.ForceRelease(bg, name))
			l, err := thief.Acquire(name, pglock.FailIfLocked())
			require.NoError(t, err)
			defer l.Close()

			require.Equal(t, exitLost, waitExit(t, cmd), stderr.String())
			t.Logf("pglock run exited %v after the theft", time.Since(stolenAt))
			assert.Contains(t, stderr.String(), "lost")
			assert.Contains(t, stderr.String(), "SIGTERM")
			b, _ := os.ReadFile(got)
			assert.Equal(t, tc.want, string(b))
			if tc.name == "sigkill" {
				assert.Contains(t, stderr.String(), "SIGKILL")
			}
			assert.False(t, l.IsReleased(), "pglock run touched the thief's lock")
		})
	}
}

// TestCLIRunForwardsSignals sends SIGINT to pglock: the command gets it,
// exits with its own status, and the lock is released after it exits.
func TestCLIRunForwardsSignals(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	dir := t.TempDir()
	up, got := filepath.Join(dir, "up"), filepath.Join(dir, "got")
	cmd, stderr := startRun(t, "--table", table, "run", "sig", "--lease", "5s", "--",
		"sh", "-c", `trap 'echo INT > "$2"; kill $!; exit 3' INT; : > "$1"; sleep 30 & wait`, "sh", up, got)
	waitFile(t, up)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.Equal(t, 3, waitExit(t, cmd), stderr.String())
	b, _ := os.ReadFile(got)
	assert.Equal(t, "INT\n", string(b))
	assert.Equal(t, exitAbsent, cli(t, "--table", table, "get", "sig").code, "the lock was not released")
}

// TestCLIRunPermits: run --permits N holds one permit of the semaphore NAME
// while CMD runs: with every permit held, --try exits 122; with one free,
// CMD runs; with a different N, run fails without running CMD.
func TestCLIRunPermits(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	c := cliClient(t, table, pglock.WithLeaseDuration(30*time.Second), pglock.WithHeartbeatFrequency(5*time.Second))
	s := c.NewSemaphore("pool", 2)
	a, err := s.Acquire(bg)
	require.NoError(t, err)
	b, err := s.Acquire(bg)
	require.NoError(t, err)
	defer a.Close()

	r := cli(t, "--table", table, "run", "--permits", "2", "--try", "--lease", "30s", "pool", "--", "sh", "-c", "echo ran")
	assert.Equal(t, exitHeld, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "permits")

	require.NoError(t, b.Close())
	r = cli(t, "--table", table, "run", "--permits", "2", "--lease", "30s", "pool", "--", "sh", "-c", "echo ran")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "ran\n", r.stdout)
	holders, err := s.Holders(bg)
	require.NoError(t, err)
	assert.Len(t, holders, 1, "run released its permit")

	r = cli(t, "--table", table, "run", "--permits", "3", "--try", "--lease", "30s", "pool", "--", "sh", "-c", "echo ran")
	assert.Equal(t, exitError, r.code, r.stderr)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "permits")

	r = cli(t, "--table", table, "run", "--permits", "1001", "pool", "--", "true")
	assert.Equal(t, exitError, r.code, r.stderr)
	assert.Contains(t, r.stderr, "--permits")
}
