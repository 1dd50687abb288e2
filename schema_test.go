package pglock_test

import (
	"database/sql"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCreateTryCreateAndDropTable(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := tableName(t)
	c, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err)

	require.NoError(t, c.CreateTable())
	assert.True(t, tableExists(t, db, "", table, "r"), "table")
	assert.True(t, tableExists(t, db, "", table+"_rvn", "S"), "sequence")
	var cycles bool
	require.NoError(t, db.QueryRow(`SELECT seqcycle FROM pg_sequence WHERE seqrelid = $1::regclass`, quote(table+"_rvn")).Scan(&cycles))
	assert.True(t, cycles, "the sequence must CYCLE")

	err = c.CreateTable()
	require.Error(t, err, "CreateTable must fail when the table exists")
	var other *pglock.OtherError
	assert.ErrorAs(t, err, &other)

	require.NoError(t, c.TryCreateTable(), "TryCreateTable is a no-op on an existing table")
	require.NoError(t, c.TryCreateTable())

	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())

	require.NoError(t, c.DropTable())
	assert.False(t, tableExists(t, db, "", table, "r"), "table dropped")
	assert.False(t, tableExists(t, db, "", table+"_rvn", "S"), "sequence dropped with it")
	require.Error(t, c.DropTable(), "DropTable of a missing table fails")
}

func TestTryCreateTableConcurrent(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := tableName(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		c, err := pglock.New(db, pglock.WithCustomTable(table))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- c.TryCreateTable()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	c := sameTable(t, db, table)
	defer func() { require.NoError(t, c.DropTable()) }()
	assert.True(t, tableExists(t, db, "", table, "r"))
	assert.True(t, tableExists(t, db, "", table+"_rvn", "S"))
	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestTryCreateTableCreatesMissingSequence(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	mustExec(t, db, `DROP SEQUENCE `+quote(table+"_rvn"))
	_, err := c.Acquire("a")
	require.Error(t, err, "no sequence, no lock")
	require.NoError(t, c.TryCreateTable())
	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestCreateTableLeavesRoomForHOT: the table is made with the fillfactor
// that keeps heartbeats HOT.
func TestCreateTableLeavesRoomForHOT(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	_, table := newClientTable(t, db)
	var opts []string
	require.NoError(t, db.QueryRow(`SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`,
		quote(table)).Scan(pq.Array(&opts)))
	assert.Contains(t, opts, fmt.Sprintf("fillfactor=%d", pglock.LockTableFillfactor))
}

// TestTryCreateTableWithoutOwnedBy plays a managed PostgreSQL where the lock
// table belongs to one role and the application connects as another, with
// privileges on it: CREATE SEQUENCE ... OWNED BY then fails ("sequence must
// have same owner as table it is linked to"), and TryCreateTable must still
// succeed.
func TestTryCreateTableWithoutOwnedBy(t *testing.T) {
	t.Parallel()
	admin := openDB(t)
	r := randomHex(4)
	owner, app, password := "tests_owner_"+r, "tests_app_"+r, "pw_"+r
	table := tableName(t)
	mustExec(t, admin, `CREATE ROLE `+owner)
	mustExec(t, admin, `CREATE ROLE `+app+` LOGIN PASSWORD '`+password+`'`)
	t.Cleanup(func() {
		for _, q := range []string{
			`DROP TABLE IF EXISTS ` + table,
			`DROP SEQUENCE IF EXISTS ` + table + `_rvn`,
			`DROP OWNED BY ` + app + `, ` + owner,
			`DROP ROLE ` + app,
			`DROP ROLE ` + owner,
		} {
			_, err := admin.Exec(q)
			assert.NoError(t, err, q)
		}
	})
	mustExec(t, admin, `CREATE TABLE `+table+` (
	name CHARACTER VARYING(255) PRIMARY KEY,
	record_version_number BIGINT,
	data BYTEA,
	owner CHARACTER VARYING(255)
)`)
	mustExec(t, admin, `ALTER TABLE `+table+` OWNER TO `+owner)
	mustExec(t, admin, `GRANT SELECT, INSERT, UPDATE, DELETE ON `+table+` TO `+app)
	mustExec(t, admin, `GRANT USAGE, CREATE ON SCHEMA public TO `+app)

	db := openDSN(t, dsnAsUser(srv.DSN(), app, password))
	// The precondition: OWNED BY cannot be used by this role.
	_, err := db.Exec(`CREATE SEQUENCE ` + table + `_probe CYCLE OWNED BY ` + table + `.record_version_number`)
	require.Error(t, err)
	var pqErr *pq.Error
	require.ErrorAs(t, err, &pqErr)
	require.Contains(t, pqErr.Message, "same owner", "the setup must reproduce the managed-PostgreSQL failure")

	c, err := pglock.New(db, pglock.WithCustomTable(table),
		pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, c.TryCreateTable())
	require.NoError(t, c.TryCreateTable(), "and again, now that the sequence exists")
	require.Error(t, c.CreateTable(), "CreateTable still fails on existing objects")
	assert.True(t, tableExists(t, admin, "", table+"_rvn", "S"))
	var owned int
	require.NoError(t, admin.QueryRow(`SELECT count(*) FROM pg_depend WHERE objid = $1::regclass AND deptype = 'a'`, table+"_rvn").Scan(&owned))
	assert.Zero(t, owned, "the sequence was made without OWNED BY")

	l, err := c.Acquire("job", pglock.WithData([]byte("d")))
	require.NoError(t, err)
	other := sameTable(t, db, table)
	_, err = other.Acquire("job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.NoError(t, l.Close())
	l, err = other.Acquire("job", pglock.FailIfLocked())
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestSequenceWrapKeepsLocksHeld: the RVN sequence CYCLEs from its maximum
// back to 1, and locks keep working across the wrap.
func TestSequenceWrapKeepsLocksHeld(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	seq := quote(table + "_rvn")
	mustExec(t, db, `ALTER SEQUENCE `+seq+` RESTART WITH 9223372036854775806`)

	l, err := c.Acquire("a")
	require.NoError(t, err)
	assert.Equal(t, int64(math.MaxInt64-1), l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l))
	assert.Equal(t, int64(math.MaxInt64), l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l), "the heartbeat that wraps")
	assert.Equal(t, int64(1), l.RecordVersionNumber(), "wrapped to MINVALUE")
	rvn, _ := rowRVN(t, db, table, "a")
	assert.Equal(t, int64(1), rvn)

	_, err = other.Acquire("a", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "still held after the wrap")
	l2, err := other.Acquire("b")
	require.NoError(t, err)
	assert.Less(t, l2.RecordVersionNumber(), int64(100), "fresh numbers after the wrap")
	require.NoError(t, l.Close())
	require.NoError(t, l2.Close())

	// Acquire at the very top, then the background heartbeat across the
	// wrap.
	mustExec(t, db, `ALTER SEQUENCE `+seq+` RESTART WITH 9223372036854775807`)
	hb := sameTable(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	l, err = hb.Acquire("c")
	require.NoError(t, err)
	assert.Equal(t, int64(math.MaxInt64), l.RecordVersionNumber())
	require.Eventually(t, func() bool {
		r := l.RecordVersionNumber()
		return l.IsReleased() || (r > 0 && r < 1000)
	}, waitBound, 10*time.Millisecond)
	require.False(t, l.IsReleased(), "the lock survives the wrap")
	rvn, _ = rowRVN(t, db, table, "c")
	assert.Less(t, rvn, int64(1000))
	_, err = other.Acquire("c", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NoError(t, l.Close())
	l, err = other.Acquire("c", pglock.FailIfLocked())
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

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

// TestMissingTableErrorsSayToCreateIt makes every call on a table that does
// not exist, and on one dropped under a held lock: each error says how to
// create the table and wraps the driver's error.
func TestMissingTableErrorsSayToCreateIt(t *testing.T) {
	t.Parallel()
	for _, driverName := range driverNames {
		db := openDriver(t, driverName)
		c, err := pglock.New(db, pglock.WithCustomTable(tableName(t)), pglock.WithHeartbeatFrequency(0))
		require.NoError(t, err)
		ctx := testCtx(t)
		_, acquireErr := c.AcquireContext(ctx, "customer-42")
		_, getErr := c.GetContext(ctx, "customer-42")
		_, getAllErr := c.GetAllLocksContext(ctx)
		errs := map[string]error{
			"Acquire":      acquireErr,
			"Get":          getErr,
			"GetAllLocks":  getAllErr,
			"ForceRelease": c.ForceRelease(ctx, "customer-42"),
		}
		held, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
		l, err := held.AcquireContext(ctx, "customer-42")
		require.NoError(t, err)
		mustExec(t, db, "DROP TABLE "+quote(table))
		errs["SendHeartbeat"] = held.SendHeartbeat(ctx, l)
		for call, err := range errs {
			require.Error(t, err, "%s/%s", driverName, call)
			for _, hint := range []string{"does not exist", "CreateTable", "TryCreateTable", "pglock init"} {
				assert.Contains(t, err.Error(), hint, "%s/%s", driverName, call)
			}
			var state interface{ SQLState() string }
			if assert.ErrorAs(t, err, &state, "%s/%s: the driver's error is not wrapped", driverName, call) {
				assert.Equal(t, "42P01", state.SQLState())
			}
		}
	}
}
