package main

import (
	"bytes"
	"database/sql"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/netfault"
)

// testExitTimeout is the --exit-timeout of the tests that cut the network.
const testExitTimeout = time.Second

// exitSlack is what the tests allow beyond the bound they check: process
// start and exit, and a loaded machine running the race detector.
const exitSlack = 3 * time.Second

// proxied starts a netfault proxy in front of the test server, closed when
// t ends, and returns it with a DSN that goes through it.
func proxied(t *testing.T) (*netfault.Proxy, string) {
	t.Helper()
	p, err := netfault.Listen(srv.Addr())
	if errors.Is(err, netfault.ErrNotLoopback) {
		t.Skipf("the test server %s is not on loopback: netfault cannot stand in front of it", srv.Addr())
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	dsn := strings.Replace(srv.DSN(), srv.Addr(), p.Addr(), 1)
	require.NotEqual(t, srv.DSN(), dsn, "cannot point the DSN at the proxy")
	return p, dsn
}

// startRunDSN starts pglock on dsn with args in the background; the caller
// waits for it.
func startRunDSN(t *testing.T, dsn string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	cmd.Env = cliEnv(envDSN + "=" + dsn)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stderr
}

// cut applies the named fault: "blackhole" silences the connections open
// now, "partition" the later ones too.
func cut(t *testing.T, p *netfault.Proxy, fault string) {
	t.Helper()
	switch fault {
	case "blackhole":
		p.Blackhole()
	case "partition":
		_, err := p.Partition()
		require.NoError(t, err)
	default:
		t.Fatalf("unknown fault %q", fault)
	}
}

// TestCLIRunExitBoundedWhenTheCommandExits lets the command exit while the
// network to PostgreSQL is silent: pglock cannot release the lock, warns,
// and still exits with the command's status within --exit-timeout. The
// lock's row is left to expire.
func TestCLIRunExitBoundedWhenTheCommandExits(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	for _, fault := range []string{"blackhole", "partition"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			p, dsn := proxied(t)
			dir := t.TempDir()
			up, proceed := filepath.Join(dir, "up"), filepath.Join(dir, "go")
			name := "exit-" + fault
			cmd, stderr := startRunDSN(t, dsn, "--exit-timeout", testExitTimeout.String(), "--table", table,
				"run", name, "--lease", "20s", "--",
				"sh", "-c", `: > "$1"; while [ ! -e "$2" ]; do sleep 0.02; done; exit 7`, "sh", up, proceed)
			waitFile(t, up)

			cut(t, p, fault)
			start := time.Now()
			require.NoError(t, exec.Command("touch", proceed).Run())
			code := waitExit(t, cmd)
			took := time.Since(start)
			t.Logf("%s: pglock run exited %d, %v after the command was told to exit; stderr:\n%s", fault, code, took, stderr)
			assert.Equal(t, 7, code)
			assert.Less(t, took, testExitTimeout+exitSlack)
			assert.Contains(t, stderr.String(), "warning")
			// The release never reached the server: the row is left to
			// expire a lease after its last heartbeat.
			assert.Equal(t, exitOK, cli(t, "--table", table, "get", name).code, "the lock's row is gone")
		})
	}
}

// TestCLIRunExitBoundedOnSignal sends SIGTERM to pglock during a partition:
// the command gets it and exits 3, and pglock exits 3 within
// --exit-timeout.
func TestCLIRunExitBoundedOnSignal(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	p, dsn := proxied(t)
	up := filepath.Join(t.TempDir(), "up")
	cmd, stderr := startRunDSN(t, dsn, "--exit-timeout", testExitTimeout.String(), "--table", table,
		"run", "sig", "--lease", "20s", "--",
		"sh", "-c", `trap 'exit 3' TERM; : > "$1"; while :; do sleep 0.05; done`, "sh", up)
	waitFile(t, up)

	cut(t, p, "partition")
	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	code := waitExit(t, cmd)
	took := time.Since(start)
	t.Logf("pglock run exited %d, %v after SIGTERM; stderr:\n%s", code, took, stderr)
	assert.Equal(t, 3, code)
	assert.Less(t, took, testExitTimeout+exitSlack)
}

// TestCLIRunExitBoundedWhenTheLockIsLost partitions pglock from the server
// for good (a blackhole alone is not enough: the heartbeat dials a new
// connection and goes on): its heartbeats go unanswered, the lock is lost
// after a lease, the command gets SIGTERM, and pglock exits 123 within
// --exit-timeout of that.
func TestCLIRunExitBoundedWhenTheLockIsLost(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	p, dsn := proxied(t)
	up := filepath.Join(t.TempDir(), "up")
	const lease, grace = time.Second, 500 * time.Millisecond
	cmd, stderr := startRunDSN(t, dsn, "--exit-timeout", testExitTimeout.String(), "--table", table,
		"run", "lost", "--lease", lease.String(), "--grace", grace.String(), "--",
		"sh", "-c", `trap 'exit 0' TERM; : > "$1"; while :; do sleep 0.05; done`, "sh", up)
	waitFile(t, up)

	cut(t, p, "partition")
	start := time.Now()
	code := waitExit(t, cmd)
	took := time.Since(start)
	t.Logf("pglock run exited %d, %v after the partition (lease %v); stderr:\n%s", code, took, lease, stderr)
	assert.Equal(t, exitLost, code)
	assert.Contains(t, stderr.String(), "lost")
	assert.Less(t, took, lease+testExitTimeout+exitSlack)
}

// TestCLIRunExitBoundedOnTimeout makes pglock wait for a held lock with
// --timeout, and partitions it while it waits: it gives up when --timeout
// passes and exits 124 within --exit-timeout of that, leaving the holder's
// lock alone.
func TestCLIRunExitBoundedOnTimeout(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	holder := cliClient(t, table, pglock.WithLeaseDuration(30*time.Second), pglock.WithHeartbeatFrequency(5*time.Second))
	l, err := holder.Acquire("held")
	require.NoError(t, err)
	defer l.Close()

	p, dsn := proxied(t)
	app := "timeout_" + table
	const timeout = 3 * time.Second
	start := time.Now()
	cmd, stderr := startRunDSN(t, dsn+"&application_name="+app, "--exit-timeout", testExitTimeout.String(),
		"--table", table, "run", "held", "--lease", "30s", "--timeout", timeout.String(), "--", "true")
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	defer db.Close()
	// Once it listens for releases, pglock has tried the lock and waits.
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %'`, app).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 10*time.Millisecond)

	cut(t, p, "partition")
	code := waitExit(t, cmd)
	took := time.Since(start)
	t.Logf("pglock run exited %d, %v after it started (--timeout %v); stderr:\n%s", code, took, timeout, stderr)
	assert.Equal(t, exitTimeout, code)
	assert.Less(t, took, timeout+testExitTimeout+exitSlack)
	assert.False(t, l.IsReleased())
}

// TestCLIExitTimeoutFlag checks that --exit-timeout is a global flag that
// must be positive.
func TestCLIExitTimeoutFlag(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	for _, bad := range []string{"0", "-1s", "soon"} {
		r := cli(t, "--exit-timeout", bad, "--table", table, "ls")
		assert.Equal(t, exitError, r.code, "%q", bad)
		assert.Contains(t, r.stderr, "exit-timeout", "%q", bad)
	}
	r := cli(t, "--table", table, "ls", "--exit-timeout", "1s")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, r.stderr)
}

// TestCLIExitBoundedWhileConnecting interrupts ls, get and release while
// their connection hangs (the server accepted it and never answers): each
// exits 125 within --exit-timeout of SIGINT.
func TestCLIExitBoundedWhileConnecting(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"ls"}, {"get", "x"}, {"release", "x", "--force"}, {"init"}, {"tune"}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			p, dsn := proxied(t)
			_, err := p.Partition()
			require.NoError(t, err)
			cmd, stderr := startRunDSN(t, dsn, append([]string{"--exit-timeout", testExitTimeout.String()}, args...)...)
			require.Eventually(t, func() bool { return p.Stats().Accepted > 0 }, 30*time.Second, 10*time.Millisecond)

			start := time.Now()
			require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			code := waitExit(t, cmd)
			took := time.Since(start)
			t.Logf("pglock %s exited %d, %v after SIGINT; stderr:\n%s", args[0], code, took, stderr)
			assert.Equal(t, exitError, code)
			assert.Contains(t, stderr.String(), "cannot connect")
			assert.Less(t, took, testExitTimeout+exitSlack)
		})
	}
}
