package pglock_test

import (
	"database/sql"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// tableRoundTrip runs every table operation on a client configured with
// name, checking that the table PostgreSQL sees is schema.rel and that the
// name never changes the SQL sent.
func tableRoundTrip(t *testing.T, db *sql.DB, name, schema, rel string) {
	t.Helper()
	c, err := pglock.New(db, pglock.WithCustomTable(name), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err, "%q", name)
	require.NoError(t, c.CreateTable(), "%q", name)
	dropped := false
	defer func() {
		if !dropped {
			_ = c.DropTable()
		}
	}()
	require.True(t, tableExists(t, db, schema, rel, "r"), "table %q.%q for %q", schema, rel, name)
	require.True(t, tableExists(t, db, schema, rel+"_rvn", "S"), "sequence %q.%q_rvn for %q", schema, rel, name)
	require.NoError(t, c.TryCreateTable())

	l, err := c.Acquire("k", pglock.WithData([]byte("v")))
	require.NoError(t, err)
	require.NoError(t, c.SendHeartbeat(bg, l))
	data, err := c.GetData("k")
	require.NoError(t, err)
	assert.Equal(t, "v", string(data))
	all, err := c.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.NoError(t, l.Close())
	_, err = c.Get("k")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)

	require.NoError(t, c.DropTable())
	dropped = true
	assert.False(t, tableExists(t, db, schema, rel, "r"), "%q dropped", name)
	assert.False(t, tableExists(t, db, schema, rel+"_rvn", "S"), "%q sequence dropped", name)
}

func TestTableNameInjection(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	victim := "victim_" + randomHex(6)
	mustExec(t, db, `CREATE TABLE `+victim+` (id int)`)
	defer mustExec(t, db, `DROP TABLE `+victim)
	mustExec(t, db, `INSERT INTO `+victim+` VALUES (42)`)

	for _, name := range []string{
		"IF EXISTS x; DROP TABLE " + victim,
		"x; DROP TABLE " + victim + "; --",
		"o'brien'); DROP TABLE " + victim + "; --",
		`x" ; DROP TABLE ` + victim + `; --`,
	} {
		t.Run(name, func(t *testing.T) {
			tableRoundTrip(t, db, name, "", name)
			assert.True(t, tableExists(t, db, "", victim, "r"), "%q dropped the victim", name)
		})
	}
	var n int
	require.NoError(t, db.QueryRow(`SELECT id FROM `+victim).Scan(&n))
	assert.Equal(t, 42, n)
}

func TestTableNameQuotesAndDots(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	r := randomHex(4)
	cases := []struct{ name, rel string }{
		{`a"b.c` + r, `a"b.c` + r},                     // not an identifier chain: taken whole
		{`"We""ird.Name` + r + `"`, `We"ird.Name` + r}, // quoted: dot and quote kept
		{`"MixedCase` + r + `"`, `MixedCase` + r},      // quoted: case kept
		{`a.b.c` + r, `a.b.c` + r},                     // three parts: taken whole
		{`with space ` + r, `with space ` + r},
		{`ünïcödé_` + r, `ünïcödé_` + r},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tableRoundTrip(t, db, tc.name, "", tc.rel) })
	}
}

func TestTableNameFoldsToLowerCase(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	upper := "LOCKS_UPPER_" + strings.ToUpper(randomHex(4))
	lower := strings.ToLower(upper)
	tableRoundTrip(t, db, upper, "", lower)

	// Unquoted, the name means the same table to the client and to raw SQL.
	c, err := pglock.New(db, pglock.WithCustomTable(upper), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err)
	require.NoError(t, c.CreateTable())
	defer func() { require.NoError(t, c.DropTable()) }()
	l, err := c.Acquire("k")
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+upper).Scan(&n), "raw unquoted SQL folds too")
	assert.Equal(t, 1, n)
	other := sameTable(t, db, lower, pglock.WithHeartbeatFrequency(0))
	_, err = other.Acquire("k", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "the lower-case name is the same table")
}

func TestTableNameSchemaQualified(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	schema := "myschema_" + randomHex(4)
	mustExec(t, db, `CREATE SCHEMA `+schema)
	defer mustExec(t, db, `DROP SCHEMA `+schema+` CASCADE`)
	tableRoundTrip(t, db, schema+".locks", schema, "locks")
	tableRoundTrip(t, db, `"`+schema+`"."Locks"`, schema, "Locks")
	tableRoundTrip(t, db, strings.ToUpper(schema)+".LOCKS", schema, "locks")
}

// TestTableNameSystemPrefix: a name starting with pg_ works like any other
// unless it resolves, through the session's search_path, to a relation of
// the system; only then is it refused, by the first call that uses it, and
// nothing is created.
func TestTableNameSystemPrefix(t *testing.T) {
	t.Parallel()
	schema := "sysprefix_" + randomHex(4)
	admin := openDB(t)
	mustExec(t, admin, `CREATE SCHEMA `+schema)
	defer mustExec(t, admin, `DROP SCHEMA `+schema+` CASCADE`)
	// Sessions that create in the test's own schema, with pg_catalog
	// searched first as PostgreSQL does when search_path does not list it.
	db := openDSN(t, dsnWith(srv.DSN(), map[string]string{"search_path": schema}))

	t.Run("an unqualified pg_ name of no system relation works", func(t *testing.T) {
		tableRoundTrip(t, db, "pg_mylocks", schema, "pg_mylocks")
	})
	t.Run("a name that resolves to a system catalog is refused", func(t *testing.T) {
		for _, name := range []string{"pg_locks", "pg_class", "PG_CLASS", "information_schema.tables"} {
			c, err := pglock.New(db, pglock.WithCustomTable(name), pglock.WithHeartbeatFrequency(0))
			require.NoError(t, err, "%q: New sends no SQL and accepts it", name)
			require.ErrorIs(t, c.CreateTable(), pglock.ErrInvalidTableName, "%q", name)
			require.ErrorIs(t, c.TryCreateTable(), pglock.ErrInvalidTableName, "%q", name)
			_, err = c.Acquire("k", pglock.FailIfLocked())
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", name)
			_, err = c.Get("k")
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", name)
			_, err = c.GetAllLocks()
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", name)
			require.ErrorIs(t, c.ForceRelease(bg, "k"), pglock.ErrInvalidTableName, "%q", name)
			_, err = c.NewElection("k").Leader(bg)
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", name)
			require.ErrorIs(t, c.DropTable(), pglock.ErrInvalidTableName, "%q", name)
			assert.Contains(t, c.CreateTable().Error(), "system relation", "%q: the error says why", name)
		}
		assert.False(t, tableExists(t, admin, schema, "pg_locks", "r"), "nothing was created")
	})
	t.Run("the same name works where search_path puts pg_catalog later", func(t *testing.T) {
		later := openDSN(t, dsnWith(srv.DSN(), map[string]string{"search_path": schema + ",pg_catalog"}))
		tableRoundTrip(t, later, "pg_locks", schema, "pg_locks")
	})
	t.Run("pg_ schemas are refused by New", func(t *testing.T) {
		for _, name := range []string{"pg_catalog.locks", "pg_temp.locks", "pg_toast.locks", `"pg_catalog"."x"`} {
			_, err := pglock.New(db, pglock.WithCustomTable(name))
			require.ErrorIs(t, err, pglock.ErrInvalidTableName, "%q", name)
		}
	})
}

// TestTableNameWithoutStandardConformingStrings: a table name never changes
// the SQL the client sends, whatever the server's settings: with
// standard_conforming_strings off, a backslash in a string literal escapes
// the next character.
func TestTableNameWithoutStandardConformingStrings(t *testing.T) {
	t.Parallel()
	db := openDSN(t, dsnWith(srv.DSN(), map[string]string{"standard_conforming_strings": "off"}))
	name := `scs\'x_` + randomHex(3)
	tableRoundTrip(t, db, name, "", name)
}
