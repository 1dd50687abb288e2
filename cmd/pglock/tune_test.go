package main

import (
	"database/sql"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// createOriginalTable creates the lock table quoted (a name quoted for SQL
// text) and its sequence seq as the original library did: no fillfactor.
func createOriginalTable(t *testing.T, quoted, seq string) {
	t.Helper()
	require.NoError(t, srv.Exec(`CREATE TABLE `+quoted+` (name CHARACTER VARYING(255) PRIMARY KEY, `+
		`record_version_number BIGINT, data BYTEA, owner CHARACTER VARYING(255)); `+
		`CREATE SEQUENCE `+seq+` CYCLE OWNED BY `+quoted+`.record_version_number`))
}

// testDB returns a pool on the test server, closed when t ends.
func testDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// storage returns the table's storage options ("" when it has none) and
// its relfilenode, which changes when the table is rewritten.
func storage(t *testing.T, db *sql.DB, quoted string) (reloptions string, relfilenode int64) {
	t.Helper()
	require.NoError(t, db.QueryRow(`SELECT COALESCE(array_to_string(reloptions, ','), ''), relfilenode::bigint
		FROM pg_class WHERE oid = to_regclass($1)`, quoted).Scan(&reloptions, &relfilenode))
	return reloptions, relfilenode
}

// updateAndFlush inserts a row into table and updates it n times, as n
// heartbeats would, on a session of its own, and makes that session
// report its statistics at once where the server can (PostgreSQL 15 on).
func updateAndFlush(t *testing.T, db *sql.DB, table string, n int) {
	t.Helper()
	conn, err := db.Conn(bg)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(bg, `INSERT INTO `+table+` (name, record_version_number, owner) VALUES ('manual', nextval('`+table+`_rvn'), 'test')`)
	require.NoError(t, err)
	for range n {
		_, err = conn.ExecContext(bg, `UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn') WHERE name = 'manual'`)
		require.NoError(t, err)
	}
	var version int
	require.NoError(t, conn.QueryRowContext(bg, `SELECT current_setting('server_version_num')::int`).Scan(&version))
	if version >= 150000 { // before 15 the statistics collector reports on its own within a second
		_, err = conn.ExecContext(bg, `SELECT pg_stat_force_next_flush()`)
		require.NoError(t, err)
	}
}

var updatesRe = regexp.MustCompile(`updates: +(\d+), (\d+) of them HOT`)

// TestCLITuneOriginalTable tunes a table made by the original library: tune
// reports fillfactor 100 and the updates, --apply sets fillfactor 50
// without rewriting the table, --rewrite rewrites it, and a lock held
// meanwhile survives.
func TestCLITuneOriginalTable(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	createOriginalTable(t, table, table+"_rvn")
	db := testDB(t)
	c := cliClient(t, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	l, err := c.Acquire("held")
	require.NoError(t, err)
	defer l.Close()
	const updates = 20
	updateAndFlush(t, db, table, updates)

	var r cliResult
	require.Eventually(t, func() bool { // statistics reach other sessions within a second or so
		var err error
		r, err = cliExec(cliEnv(envDSN+"="+srv.DSN()), nil, "--table", table, "tune")
		m := updatesRe.FindStringSubmatch(r.stdout)
		return err == nil && r.code == exitOK && m != nil && atoi(m[1]) >= updates
	}, 30*time.Second, 200*time.Millisecond, "tune never counted the updates")
	t.Logf("pglock tune on the original table:\n%s", r.stdout)
	assert.Contains(t, r.stdout, "fillfactor:  100 (pglock creates its tables with 50)")
	assert.Contains(t, r.stdout, "rows:        2, 2 held")
	assert.Contains(t, r.stdout, "pglock tune --apply")
	opts, before := storage(t, db, table)
	assert.Empty(t, opts)

	r = cli(t, "--table", table, "tune", "--apply")
	require.Equal(t, exitOK, r.code, r.stderr)
	t.Logf("pglock tune --apply:\n%s", r.stdout)
	assert.Contains(t, r.stdout, `ALTER TABLE "public".`)
	assert.Contains(t, r.stdout, "fillfactor:  50 (as pglock creates its tables)")
	opts, after := storage(t, db, table)
	assert.Equal(t, "fillfactor=50", opts)
	assert.Equal(t, before, after, "--apply rewrote the table")

	r = cli(t, "--table", table, "tune", "--rewrite")
	require.Equal(t, exitOK, r.code, r.stderr)
	t.Logf("pglock tune --rewrite:\n%s", r.stdout)
	assert.Contains(t, r.stdout, "takes an exclusive lock on the table until it ends")
	assert.Contains(t, r.stdout, "The fillfactor is 50 already.")
	opts, rewritten := storage(t, db, table)
	assert.Equal(t, "fillfactor=50", opts)
	assert.NotEqual(t, after, rewritten, "--rewrite did not rewrite the table")

	require.NoError(t, c.SendHeartbeat(bg, l), "the lock did not survive the tuning")
	assert.False(t, l.IsReleased())
	r = cli(t, "--table", table, "ls")
	assert.Contains(t, r.stdout, "held")
}

// atoi is strconv.Atoi for strings a regexp matched as digits.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestCLITuneQuotedName tunes a table whose schema and name need quoting,
// with --rewrite alone, which applies the fillfactor too; a name that
// looks like SQL is only ever a name.
func TestCLITuneQuotedName(t *testing.T) {
	t.Parallel()
	suffix := strings.TrimPrefix(cliTable(t), "cli_")
	schema, name := "Tune "+suffix, `Odd "Locks"`
	quoted := pq.QuoteIdentifier(schema) + "." + pq.QuoteIdentifier(name)
	require.NoError(t, srv.Exec(`CREATE SCHEMA `+pq.QuoteIdentifier(schema)))
	t.Cleanup(func() { _ = srv.Exec(`DROP SCHEMA ` + pq.QuoteIdentifier(schema) + ` CASCADE`) })
	createOriginalTable(t, quoted, pq.QuoteIdentifier(schema)+"."+pq.QuoteIdentifier(name+"_rvn"))
	db := testDB(t)
	_, before := storage(t, db, quoted)

	r := cli(t, "--table", quoted, "tune", "--rewrite")
	require.Equal(t, exitOK, r.code, r.stderr)
	t.Logf("pglock --table %s tune --rewrite:\n%s", quoted, r.stdout)
	assert.Contains(t, r.stdout, "table:       "+quoted)
	opts, after := storage(t, db, quoted)
	assert.Equal(t, "fillfactor=50", opts)
	assert.NotEqual(t, before, after)

	victim := cliTable(t)
	cliInit(t, victim)
	r = cli(t, "--table", victim+"; DROP TABLE "+victim, "tune", "--rewrite")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "does not exist")
	assert.Equal(t, exitOK, cli(t, "--table", victim, "ls").code, "the table named in the SQL-like name is gone")
}

// TestCLITuneErrors checks tune's usage errors, a missing table or schema
// (the same errors as the other commands'), a table pglock created (tuned
// already), and a table kept busy beyond --lock-timeout.
func TestCLITuneErrors(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	for _, args := range [][]string{{"tune", "extra"}, {"tune", "--lock-timeout", "0"}, {"tune", "--apply=maybe"}} {
		r := cli(t, append([]string{"--table", table}, args...)...)
		assert.Equal(t, exitError, r.code, "%q", args)
		assert.Contains(t, r.stderr, "pglock: ", "%q", args)
	}
	r := cli(t, "--table", table, "tune")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "does not exist")
	assert.Contains(t, r.stderr, "pglock init")
	r = cli(t, "--table", "no_such_schema.locks", "tune", "--apply")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "schema")

	cliInit(t, table)
	r = cli(t, "--table", table, "tune")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "fillfactor:  50 (as pglock creates its tables)")
	assert.NotContains(t, r.stdout, "--apply")

	// A transaction that read the table holds a lock VACUUM FULL waits for.
	db := testDB(t)
	tx, err := db.Begin()
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	_, err = tx.Exec(`SELECT * FROM ` + table)
	require.NoError(t, err)
	r = cli(t, "--table", table, "tune", "--rewrite", "--lock-timeout", "200ms")
	assert.Equal(t, exitError, r.code)
	assert.Contains(t, r.stderr, "--lock-timeout 200ms")
	t.Logf("tune --rewrite on a busy table: %s", r.stderr)
}

// TestQuoteTable checks that table names are read as the library reads
// them and quoted whole.
func TestQuoteTable(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"locks":                  `"locks"`,
		"MySchema.Locks":         `"myschema"."locks"`,
		`"My Locks"`:             `"My Locks"`,
		`s."Odd ""Locks"""`:      `"s"."Odd ""Locks"""`,
		"a.b.c":                  `"a.b.c"`,
		"locks; DROP TABLE x":    `"locks; DROP TABLE x"`,
		`"unterminated`:          `"""unterminated"`,
		`""`:                     `""""""`,
		"my-locks":               `"my-locks"`,
		"s.":                     `"s."`,
		`x"; DROP TABLE y; --"`:  `"x""; DROP TABLE y; --"""`,
		"_private$1":             `"_private$1"`,
		"1abc":                   `"1abc"`,
		`"A"."B"`:                `"A"."B"`,
		`public."Locks".`:        `"public.""Locks""."`,
		`"a"b`:                   `"""a""b"`,
		"schema.\"quoted.dots\"": `"schema"."quoted.dots"`,
	} {
		assert.Equal(t, want, quoteTable(in), "%q", in)
	}
}
