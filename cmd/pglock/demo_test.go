package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkDemo checks that a demo run went through every step.
func checkDemo(t *testing.T, r cliResult) {
	t.Helper()
	require.Equal(t, exitOK, r.code, "stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	t.Logf("demo took %v:\n%s", r.took, r.stdout)
	for _, want := range []string{"leads", "tick 1", "CRASHES", "after the crash", "after the leader began to resign",
		"observer: the leader is now", "summary:", "dropped table"} {
		assert.Contains(t, r.stdout, want)
	}
	assert.Empty(t, r.stderr)
}

func TestCLIDemoOnGivenServer(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	checkDemo(t, cli(t, "demo", "--lease", "1s"))
}

// TestCLIDemoStartsItsOwnServer runs the demo with no DSN anywhere: it must
// start PostgreSQL, and leave neither the process nor its directory behind.
func TestCLIDemoStartsItsOwnServer(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	if srv.External() {
		t.Skip("the tests run on an external server: no PostgreSQL binaries to start one with")
	}
	r := cliWithEnv(t, cliEnv(), nil, "demo", "--lease", "1s")
	checkDemo(t, r)
	m := regexp.MustCompile(`pid (\d+), data in (\S+) `).FindStringSubmatch(r.stdout)
	require.NotNil(t, m, "the demo did not say which server it started")
	pid, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	assert.Contains(t, r.stdout, "stopped PostgreSQL and removed "+m[2])
	_, err = os.Stat(m[2])
	assert.ErrorIs(t, err, os.ErrNotExist, "the server's directory is left behind")
	// The postmaster was the demo's child and was waited for: it is gone.
	assert.Eventually(t, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) },
		5*time.Second, 50*time.Millisecond, "PostgreSQL (pid %d) still runs", pid)
}

// TestCLIDemoInterrupted interrupts the demo while its workers run: it
// must stop everything, remove its server, and exit 130.
func TestCLIDemoInterrupted(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	if srv.External() {
		t.Skip("the tests run on an external server: no PostgreSQL binaries to start one with")
	}
	cmd := exec.Command(cliBin, "demo", "--lease", "1s")
	cmd.Env = cliEnv()
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	dirRe := regexp.MustCompile(`pid (\d+), data in (\S+) `)
	var dir string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := dirRe.FindStringSubmatch(lines.Text()); m != nil {
			dir = m[2]
		}
		if regexp.MustCompile(`tick 1,`).MatchString(lines.Text()) {
			break
		}
	}
	require.NotEmpty(t, dir, "the demo did not say which server it started")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	require.Equal(t, exitSignal+int(syscall.SIGINT), waitExit(t, cmd), "%q", rest)
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "the server's directory is left behind")
	assert.Contains(t, rest[len(rest)-1], "interrupted")
}
