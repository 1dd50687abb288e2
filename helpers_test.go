package pglock_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/sqlcount"
	"cirello.io/pglock/internal/testmain"
)

// srv is the package's PostgreSQL: a throwaway cluster, or PGLOCK_TEST_DSN.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// The helpers below are the package's only ways to reach the test server
// and to make tables and clients on it; every test file builds on them.

var bg = context.Background()

// waitBound bounds every wait of the tests: far above what any step takes
// on a loaded machine, so only a hang reaches it.
const waitBound = 60 * time.Second

// testCtx returns a context that ends when t ends or after waitBound, so a
// broken test fails instead of hanging.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}

// randomHex returns n random bytes in hex, for unique object names.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// openDB opens a lib/pq pool on the test server, closed when t ends.
func openDB(t testing.TB) *sql.DB {
	t.Helper()
	return openDSN(t, srv.DSN())
}

// openDSN opens a lib/pq pool on dsn, closed when t ends.
func openDSN(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// dsnWith returns dsn with connection parameters added, in URL or
// key=value form as the DSN is written.
func dsnWith(dsn string, params map[string]string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		for k, v := range params {
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for k, v := range params {
		dsn += " " + k + "='" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `'`, `\'`) + "'"
	}
	return dsn
}

// dsnAsUser returns dsn for another role.
func dsnAsUser(dsn, user, password string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.User = url.UserPassword(user, password)
		return u.String()
	}
	return dsnWith(dsn, map[string]string{"user": user, "password": password})
}

// openApp opens a pool whose sessions carry a unique application_name, so
// that a test can terminate its own backends and nobody else's. It returns
// the pool and the application name.
func openApp(t testing.TB) (*sql.DB, string) {
	t.Helper()
	app := "pglock_tests_" + randomHex(6)
	return openDSN(t, dsnWith(srv.DSN(), map[string]string{"application_name": app})), app
}

// driverNames are the database/sql drivers the scenarios run under: lib/pq
// and pgx v5's stdlib, opened with sql.Open.
var driverNames = []string{"postgres", "pgx"}

// pgxConnector names a pool made by pgx's stdlib.OpenDB from a parsed
// config, the other common way to use pgx through database/sql.
const pgxConnector = "pgx-OpenDB"

// openDriver opens a pool on the test server with the named driver, or with
// stdlib.OpenDB for pgxConnector, closed when t ends.
func openDriver(t testing.TB, driverName string) *sql.DB {
	t.Helper()
	var db *sql.DB
	if driverName == pgxConnector {
		cfg, err := pgx.ParseConfig(srv.DSN())
		require.NoError(t, err)
		db = stdlib.OpenDB(*cfg)
	} else {
		var err error
		db, err = sql.Open(driverName, srv.DSN())
		require.NoError(t, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// shortLease is a lease short enough for tests that wait for losses, with
// heartbeats frequent enough to keep held locks alive under load.
var shortLease = []pglock.ClientOption{
	pglock.WithLeaseDuration(3 * time.Second),
	pglock.WithHeartbeatFrequency(100 * time.Millisecond),
}

// tableName returns a fresh table name for one test.
func tableName(t testing.TB) string {
	t.Helper()
	return "locks_" + randomHex(6)
}

// newClient makes a client on a fresh table, created now and dropped when t
// ends.
func newClient(t testing.TB, db *sql.DB, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, _ := newClientTable(t, db, opts...)
	return c
}

// newClientTable is newClient that also returns the table's name, for a
// second client on it or for raw SQL. A WithCustomTable in opts names the
// table instead.
func newClientTable(t testing.TB, db *sql.DB, opts ...pglock.ClientOption) (*pglock.Client, string) {
	t.Helper()
	table := tableName(t)
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	require.NoError(t, c.CreateTable())
	t.Cleanup(func() { _ = c.DropTable() })
	return c, table
}

// sameTable makes another client on table, which it neither creates nor
// drops.
func sameTable(t testing.TB, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

// newTable creates a fresh table through a plain lib/pq client and drops it
// when t ends. It returns the table name and that client's pool.
func newTable(t testing.TB) (string, *sql.DB) {
	t.Helper()
	db := openDB(t)
	_, table := newClientTable(t, db)
	return table, db
}

// countedDB opens a pool through the counting driver, closed when t ends.
// Its *sql.DB keeps the connection string, so clients on it LISTEN.
func countedDB(t testing.TB) (*sql.DB, *sqlcount.Counter) {
	t.Helper()
	db, cnt, err := sqlcount.Open(srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db, cnt
}

// unsafeClient makes a client on table through UnsafeNew (the counting
// driver is not one New trusts). It neither creates nor drops the table.
func unsafeClient(t testing.TB, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, err := pglock.UnsafeNew(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

// recorder keeps the statements a counting driver reports.
type recorder struct {
	mu     sync.Mutex
	events []sqlcount.Event
}

func (r *recorder) observe(e sqlcount.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []sqlcount.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// errReset stands for a connection reset under a statement, as the counting
// driver injects it.
var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

// quote quotes one identifier for the raw SQL of tests.
func quote(s string) string { return pq.QuoteIdentifier(s) }

// mustExec runs one statement and fails t on error.
func mustExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	_, err := db.Exec(query, args...)
	require.NoError(t, err, query)
}

// rowRVN reads the record version number stored for name in table (as given
// to WithCustomTable, unquoted). valid is false when it is NULL.
func rowRVN(t testing.TB, db *sql.DB, table, name string) (rvn int64, valid bool) {
	t.Helper()
	var n sql.NullInt64
	err := db.QueryRow(`SELECT record_version_number FROM `+quote(table)+` WHERE name = $1`, name).Scan(&n)
	require.NoError(t, err)
	return n.Int64, n.Valid
}

// stealRow takes the named lock's row over from outside the client under
// test, as another client taking it over (or a waiter that wrongly thought
// it stale) would: a new RVN from the table's own sequence, so a real one,
// and another owner, "thief". table is as given to WithCustomTable,
// unquoted.
func stealRow(t testing.TB, db *sql.DB, table, name string) {
	t.Helper()
	seq := pq.QuoteLiteral(quote(table + "_rvn"))
	res, err := db.Exec(`UPDATE `+quote(table)+` SET record_version_number = nextval(`+seq+`::regclass), owner = 'thief' WHERE name = $1`, name)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "no row %q to steal in %s", name, table)
}

// tableExists reports whether schema.rel exists; an empty schema means the
// current schema.
func tableExists(t testing.TB, db *sql.DB, schema, rel, kind string) bool {
	t.Helper()
	var ok bool
	err := db.QueryRow(`SELECT EXISTS (
	SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relname = $2 AND c.relkind = $3 AND n.nspname = CASE WHEN $1 = '' THEN current_schema() ELSE $1 END)`,
		schema, rel, kind).Scan(&ok)
	require.NoError(t, err)
	return ok
}

// newLedger makes a table for guarded writes, dropped when t ends.
func newLedger(t testing.TB, db *sql.DB) string {
	t.Helper()
	name := "ledger_" + tableName(t)
	_, err := db.Exec(`CREATE TABLE ` + name + ` (id BIGSERIAL PRIMARY KEY, who TEXT NOT NULL)`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE ` + name) })
	return name
}

// ledgerCount counts the ledger's entries written by who.
func ledgerCount(t testing.TB, db *sql.DB, ledger, who string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+ledger+` WHERE who = $1`, who).Scan(&n))
	return n
}

// acquireResult is what acquireAsync hands back: the lock, the error, and
// when AcquireContext returned.
type acquireResult struct {
	l   *pglock.Lock
	err error
	at  time.Time
}

// acquireAsync runs AcquireContext on its own goroutine and hands back the
// result once; the test owns the goroutine and waits for it.
func acquireAsync(ctx context.Context, c *pglock.Client, name string, opts ...pglock.LockOption) <-chan acquireResult {
	out := make(chan acquireResult, 1)
	go func() {
		l, err := c.AcquireContext(ctx, name, opts...)
		out <- acquireResult{l, err, time.Now()}
	}()
	return out
}

// isClosed reports whether ch is closed now.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitClosed waits for ch to close and returns how long it took, failing t
// after limit.
func waitClosed(t testing.TB, ch <-chan struct{}, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s: not closed after %v", what, limit)
		return 0
	}
}

// exampleDSN is the connection string of the test database for the runnable
// examples, which cannot take a *testing.T: it stands for yours. srv is set
// by TestMain before examples run.
func exampleDSN() string { return srv.DSN() }

// exampleTable returns a fresh table name for one example.
func exampleTable() string { return "example_" + randomHex(6) }

// exampleClient opens a lib/pq pool on the test database and makes a client
// on a fresh table, created now, for one example. It ends the program on
// error, as the examples do. cleanup drops the table and closes the pool.
func exampleClient(opts ...pglock.ClientOption) (c *pglock.Client, db *sql.DB, cleanup func()) {
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	c, err = pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(exampleTable())}, opts...)...)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.CreateTable(); err != nil {
		log.Fatal(err)
	}
	return c, db, func() {
		_ = c.DropTable()
		_ = db.Close()
	}
}

// fullSuiteOnly skips t under -short (see testmain.FullSuiteOnly).
func fullSuiteOnly(t *testing.T) {
	t.Helper()
	testmain.FullSuiteOnly(t)
}
