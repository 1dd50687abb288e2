package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fencedWrite is the command both runs execute: it records the environment
// pglock run gave it, says it is up, waits for its go file, then writes to
// a store that keeps the largest fencing token it saw and refuses smaller
// ones. The store is the file "store" (the largest token) and the file
// "log" (one line per write, written or refused). Arguments: DIR, the run's
// label.
const fencedWrite = `dir=$1; me=$2
echo "$PGLOCK_LOCK_NAME $PGLOCK_FENCING_TOKEN" > "$dir/env.$me"
: > "$dir/up.$me"
while [ ! -e "$dir/go.$me" ]; do sleep 0.05; done
last=$(cat "$dir/store" 2>/dev/null || echo 0)
if [ "$PGLOCK_FENCING_TOKEN" -lt "$last" ]; then
	echo "$me refused $PGLOCK_FENCING_TOKEN" >> "$dir/log"; exit 1
fi
echo "$PGLOCK_FENCING_TOKEN" > "$dir/store"; echo "$me wrote $PGLOCK_FENCING_TOKEN" >> "$dir/log"`

// TestCLIRunFencingToken stalls a `pglock run` (SIGSTOP: its heartbeat
// stops, its command goes on), lets a second one take the lock over once
// the lease lapsed and write, then lets the first one's command write: the
// store refuses it, because its token is smaller than its successor's.
func TestCLIRunFencingToken(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	run := func(me string) (*exec.Cmd, *bytes.Buffer) {
		return startRun(t, "--table", table, "run", "fenced", "--lease", "1s", "--",
			"sh", "-c", fencedWrite, "sh", dir, me)
	}

	first, firstErr := run("A")
	waitFile(t, path("up.A"))
	require.NoError(t, first.Process.Signal(syscall.SIGSTOP))
	require.NoError(t, os.WriteFile(path("go.B"), nil, 0o600))
	second, secondErr := run("B")
	require.Equal(t, exitOK, waitExit(t, second), "the successor did not take over and write: %s", secondErr)

	require.NoError(t, os.WriteFile(path("go.A"), nil, 0o600))
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(path("log"))
		return strings.Count(string(b), "\n") == 2
	}, 30*time.Second, 10*time.Millisecond, "the stalled run's command never wrote")
	require.NoError(t, first.Process.Signal(syscall.SIGCONT))
	status := waitExit(t, first)
	t.Logf("the stalled run exited %d: %s", status, firstErr)
	assert.NotEqual(t, exitOK, status)

	nameA, tokenA := envToken(t, path("env.A"))
	nameB, tokenB := envToken(t, path("env.B"))
	assert.Equal(t, []string{"fenced", "fenced"}, []string{nameA, nameB})
	assert.Less(t, tokenA, tokenB)
	log, err := os.ReadFile(path("log"))
	require.NoError(t, err)
	want := fmt.Sprintf("B wrote %d\nA refused %d\n", tokenB, tokenA)
	assert.Equal(t, want, string(log))
	t.Logf("store log:\n%s", log)
}

// envToken reads the lock name and fencing token a command recorded.
func envToken(t *testing.T, path string) (string, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	name, token, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	require.True(t, ok, "%q", b)
	n, err := strconv.ParseInt(token, 10, 64)
	require.NoError(t, err, "%q", b)
	require.Positive(t, n)
	return name, n
}
