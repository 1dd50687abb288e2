package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock/internal/testmain"
)

// TestCLIBehindPgBouncer runs the commands through PgBouncer in session
// and in transaction mode, with lib/pq's defaults: init, run (two loops of
// it on one name, which must never overlap), ls, get and release --force.
func TestCLIBehindPgBouncer(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := testmain.StartPgBouncer(t, srv, mode)
			env := cliEnv(envDSN + "=" + b.DSN())
			table := cliTable(t)
			run := func(args ...string) cliResult {
				t.Helper()
				return cliWithEnv(t, env, nil, append([]string{"--table", table}, args...)...)
			}
			require.Equal(t, exitOK, run("init").code)
			runNoOverlap(t, env, table)

			c := cliClient(t, table)
			t.Cleanup(func() { _ = c.Close(bg) })
			l, err := c.Acquire("job")
			require.NoError(t, err)
			r := run("ls")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Contains(t, r.stdout, "job")
			r = run("get", "job")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Contains(t, r.stdout, "owner: "+l.Owner())
			r = run("release", "job", "--force")
			require.Equal(t, exitOK, r.code, r.stderr)
			select {
			case <-l.Done(): // the holder's next heartbeat finds the row gone
			case <-time.After(10 * time.Second):
				t.Fatal("the holder did not notice its lock was released by force")
			}
			assert.Equal(t, exitAbsent, run("get", "job").code)
			assert.Equal(t, 3, run("run", "exit", "--", "sh", "-c", "exit 3").code)
		})
	}
}

// runNoOverlap runs two loops of `pglock run` of one name at once, each
// command creating a marker file exclusively while it holds the lock.
func runNoOverlap(t *testing.T, env []string, table string) {
	t.Helper()
	dir := t.TempDir()
	marker, log := filepath.Join(dir, "marker"), filepath.Join(dir, "log")
	script := `set -C; : > "$1" || exit 99; echo in >> "$2"; sleep 0.1; echo out >> "$2"; rm "$1"`
	const loops, runs = 2, 3
	var wg sync.WaitGroup
	for range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range runs {
				r, err := cliExec(env, nil, "--table", table, "run", "shared", "--lease", "5s", "--", "sh", "-c", script, "sh", marker, log)
				assert.NoError(t, err)
				assert.Equal(t, exitOK, r.code, "overlap or failure: %s", r.stderr)
			}
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("in\nout\n", loops*runs), string(b), "commands overlapped behind %s", table)
}
