package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is the tests' PostgreSQL; cliBin the pglock binary built once for
// them.
var (
	srv    *pgserver.Server
	cliBin string
)

func TestMain(m *testing.M) {
	// The tests mostly wait for pglock processes, so they may run more at
	// once than there are CPUs, unless -parallel says otherwise.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(cliMain(m))
}

// cliMain builds the binary, then runs the tests against a server of their
// own.
func cliMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pglock-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cliBin = filepath.Join(dir, "pglock")
	build := exec.Command("go", "build", "-o", cliBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build pglock:", err)
		return 1
	}
	return testmain.Run(m, &srv)
}

// cliEnv is the environment of the binary: this one without any setting
// that would pick a server, plus extra.
func cliEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == envDSN || k == pgserver.EnvDSN || strings.HasPrefix(k, "PG") && k != pgserver.EnvPGBin {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// cliResult is how one run of the binary went.
type cliResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// cli runs the binary with args against the test server (PGLOCK_DSN) and
// waits for it.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	return cliWithEnv(t, cliEnv(envDSN+"="+srv.DSN()), nil, args...)
}

// cliWithEnv runs the binary with args, env and stdin.
func cliWithEnv(t *testing.T, env []string, stdin []byte, args ...string) cliResult {
	t.Helper()
	r, err := cliExec(env, stdin, args...)
	require.NoError(t, err)
	return r
}

// cliExec runs the binary with args, env and stdin. It fails, without a
// testing.T so that other goroutines may call it, when the binary could not
// run or did not exit by itself.
func cliExec(env []string, stdin []byte, args ...string) (cliResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return r, fmt.Errorf("pglock %q: %w\nstderr: %s", args, err, r.stderr)
	}
	r.code = cmd.ProcessState.ExitCode()
	return r, nil
}

// cliTable returns a fresh table name, dropped (if created) when t ends.
func cliTable(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	table := "cli_" + hex.EncodeToString(b)
	t.Cleanup(func() { _ = srv.Exec(`DROP TABLE IF EXISTS ` + table + `; DROP SEQUENCE IF EXISTS ` + table + `_rvn`) })
	return table
}

// cliClient returns a library client on table, with a pool closed when t
// ends.
func cliClient(t *testing.T, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

// cliInit creates table through the binary.
func cliInit(t *testing.T, table string) {
	t.Helper()
	r := cli(t, "--table", table, "init")
	require.Equal(t, exitOK, r.code, r.stderr)
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := os.Stat(path)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "%s never appeared", path)
}

var bg = context.Background()

// TestCLIUsageListsEveryCommand checks that help describes every command
// and the global flags.
func TestCLIUsageListsEveryCommand(t *testing.T) {
	t.Parallel()
	r := cli(t, "help")
	require.Equal(t, exitOK, r.code, r.stderr)
	for name := range commands {
		assert.Contains(t, r.stdout, "\n  "+name+" ", "help does not describe %q", name)
	}
	for _, flag := range []string{"--dsn", "--table", "--exit-timeout"} {
		assert.Contains(t, r.stdout, flag)
	}
}

// fullSuiteOnly skips t under -short (see testmain.FullSuiteOnly).
func fullSuiteOnly(t *testing.T) {
	t.Helper()
	testmain.FullSuiteOnly(t)
}
