package main

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCLIMissingTable(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	for _, args := range [][]string{{"ls"}, {"get", "x"}, {"release", "x", "--force"}, {"run", "x", "--", "true"},
		{"run", "x", "--try", "--", "true"}} {
		r := cli(t, append([]string{"--table", table}, args...)...)
		assert.Equal(t, exitError, r.code, "%q", args)
		assert.Contains(t, r.stderr, "does not exist", "%q", args)
		assert.Contains(t, r.stderr, "pglock init", "%q", args)
	}
	for _, args := range [][]string{{"init"}, {"ls"}} {
		r := cli(t, append([]string{"--table", "no_such_schema.locks"}, args...)...)
		assert.Equal(t, exitError, r.code, "%q", args)
		assert.Contains(t, r.stderr, "schema", "%q", args)
	}
}

func TestCLIInitLsGetRelease(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	cliInit(t, table) // again: nothing to do
	checkLsEmpty(t, table)

	c := cliClient(t, table, pglock.WithOwner("tester\x1b[2J"), pglock.WithLeaseDuration(30*time.Second),
		pglock.WithHeartbeatFrequency(100*time.Millisecond))
	data := []byte("hello\x1b]0;pwned\a\xffworld, and then a long tail that will be cut")
	l, err := c.Acquire("job", pglock.WithData(data))
	require.NoError(t, err)
	kept, err := c.Acquire("kept", pglock.KeepOnRelease(), pglock.WithData([]byte("k")))
	require.NoError(t, err)
	require.NoError(t, kept.Close())

	checkLs(t, table, data)
	checkGet(t, table, data)
	checkForceRelease(t, table, l)
}

// checkLsEmpty checks ls on a table without locks, in both formats.
func checkLsEmpty(t *testing.T, table string) {
	t.Helper()
	r := cli(t, "ls", "--table", table) // global flags may follow the command
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "NAME  OWNER  RVN  DATA\n", r.stdout)
	r = cli(t, "--table", table, "ls", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.JSONEq(t, "[]", r.stdout)
}

// checkLs checks ls on table, which holds the lock "job" with data and an
// owner full of escape sequences, and the row "kept" released with
// KeepOnRelease: text is made safe, JSON carries it as it is.
func checkLs(t *testing.T, table string, data []byte) {
	t.Helper()
	r := cli(t, "--table", table, "ls")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "\x1b")
	assert.NotContains(t, r.stdout, "\a")
	assert.Contains(t, r.stdout, "job   tester.[2J")
	assert.Contains(t, r.stdout, "hello.]0;pwned..world, and then a long t...")
	assert.NotContains(t, r.stdout, "kept")
	r = cli(t, "--table", table, "ls", "--all")
	assert.Contains(t, r.stdout, "kept")
	assert.Contains(t, r.stdout, "released")

	r = cli(t, "--table", table, "ls", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var locks []lockJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &locks))
	require.Len(t, locks, 1)
	assert.Equal(t, "job", locks[0].Name)
	assert.Equal(t, "tester\x1b[2J", locks[0].Owner, "JSON carries the owner as it is, escaped")
	require.NotNil(t, locks[0].RVN)
	assert.Positive(t, *locks[0].RVN)
	assert.Equal(t, len(data), locks[0].DataSize)
	assert.Equal(t, "hello.]0;pwned..world, and then a long t...", locks[0].DataPreview)
}

// checkGet checks get on the table checkLs reads, in every format, and on
// a missing lock.
func checkGet(t *testing.T, table string, data []byte) {
	t.Helper()
	r := cli(t, "--table", table, "get", "job")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "owner: tester.[2J\n")
	assert.Contains(t, r.stdout, "bytes)")
	r = cli(t, "--table", table, "get", "--data", "job")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, string(data), r.stdout)
	r = cli(t, "--table", table, "get", "job", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var one lockJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &one))
	assert.Equal(t, "job", one.Name)
	r = cli(t, "--table", table, "get", "kept")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "released")

	r = cli(t, "--table", table, "get", "nope")
	assert.Equal(t, exitAbsent, r.code)
	assert.Contains(t, r.stderr, `no lock named "nope"`)
	r = cli(t, "--table", table, "get")
	assert.Equal(t, exitError, r.code)
}

// checkForceRelease releases l, the lock "job", by force: release refuses
// without --force, and with it the holder learns its lock is gone.
func checkForceRelease(t *testing.T, table string, l *pglock.Lock) {
	t.Helper()
	r := cli(t, "--table", table, "release", "job")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "--force")
	require.False(t, l.IsReleased())
	r = cli(t, "--table", table, "release", "job", "--force")
	require.Equal(t, exitOK, r.code, r.stderr)
	select {
	case <-l.Done(): // the holder's next heartbeat finds the row gone
	case <-time.After(10 * time.Second):
		t.Fatal("the holder did not notice its lock was released by force")
	}
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	assert.Equal(t, exitAbsent, cli(t, "--table", table, "get", "job").code)
	assert.Equal(t, exitAbsent, cli(t, "--table", table, "release", "--force", "job").code)
}

func TestCLIConnection(t *testing.T) {
	t.Parallel()
	table := cliTable(t)

	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	r := cli(t, "--dsn", "postgres://postgres@"+closed+"/postgres?sslmode=disable&connect_timeout=5", "ls")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "cannot connect to PostgreSQL (connection string from --dsn)")
	assert.Contains(t, r.stderr, "refused")

	r = cli(t, "--dsn", "no equals sign here", "ls")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "--dsn")

	// --dsn wins over PGLOCK_DSN.
	r = cliWithEnv(t, cliEnv(envDSN+"=postgres://postgres@"+closed+"/postgres?sslmode=disable"), nil,
		"--dsn", srv.DSN(), "--table", table, "init")
	assert.Equal(t, exitOK, r.code, r.stderr)
	r = cliWithEnv(t, cliEnv(envDSN+"=postgres://postgres@"+closed+"/postgres?sslmode=disable"), nil, "ls")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "$PGLOCK_DSN")

	// Without either, libpq's variables.
	if srv.External() {
		t.Log("external server: the PG* variables are not tested")
		return
	}
	host, port, _ := net.SplitHostPort(srv.Addr())
	r = cliWithEnv(t, cliEnv("PGHOST="+host, "PGPORT="+port, "PGUSER=postgres", "PGDATABASE=postgres", "PGSSLMODE=disable"), nil,
		"--table", table, "ls")
	assert.Equal(t, exitOK, r.code, r.stderr)
	r = cliWithEnv(t, cliEnv("PGHOST=127.0.0.1", "PGPORT="+strings.TrimPrefix(closed, "127.0.0.1:"), "PGSSLMODE=disable"), nil, "ls")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "PG* environment variables")
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{}, {"frob"}, {"ls", "--frob"}, {"ls", "extra"}, {"run"}, {"run", "x"},
		{"run", "--", "true"}, {"run", "x", "--lease", "0", "--", "true"}, {"get", "a", "b"}, {"release"}} {
		r := cli(t, args...)
		assert.Equal(t, exitError, r.code, "%q", args)
		assert.Contains(t, r.stderr, "pglock: ", "%q", args)
	}
	r := cli(t, "help")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "Exit statuses:")
	assert.Equal(t, exitOK, cli(t, "-h").code)
}
