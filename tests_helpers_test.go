package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// Helpers of the tests area. Their names start with "tests" so that they do
// not collide with helpers of other areas in this package.

// testsDSNWith returns the test server's DSN with connection parameters
// added, in URL or key=value form as the DSN is written.
func testsDSNWith(dsn string, params map[string]string) string {
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

// testsDSNAsUser returns the test server's DSN for another role.
func testsDSNAsUser(dsn, user, password string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.User = url.UserPassword(user, password)
		return u.String()
	}
	return testsDSNWith(dsn, map[string]string{"user": user, "password": password})
}

// testsOpenApp opens a pool whose sessions carry a unique application_name,
// so that a test can terminate its own backends and nobody else's. It
// returns the pool and the application name.
func testsOpenApp(t testing.TB) (*sql.DB, string) {
	t.Helper()
	app := "pglock_tests_" + randomHex(6)
	return openDSN(t, testsDSNWith(srv.DSN(), map[string]string{"application_name": app})), app
}

// testsExec runs one statement and fails t on error.
func testsExec(t testing.TB, db *sql.DB, query string, args ...any) {
	t.Helper()
	_, err := db.Exec(query, args...)
	require.NoError(t, err, query)
}

// testsRowRVN reads the record version number stored for name in table (a
// quoted SQL identifier). valid is false when it is NULL.
func testsRowRVN(t testing.TB, db *sql.DB, quotedTable, name string) (rvn int64, valid bool) {
	t.Helper()
	var n sql.NullInt64
	err := db.QueryRow(`SELECT record_version_number FROM `+quotedTable+` WHERE name = $1`, name).Scan(&n)
	require.NoError(t, err)
	return n.Int64, n.Valid
}

// testsStealRow moves the row's RVN as another client taking the lock over
// would, from outside the client under test.
func testsStealRow(t testing.TB, db *sql.DB, quotedTable, name string) {
	t.Helper()
	res, err := db.Exec(`UPDATE `+quotedTable+` SET record_version_number = record_version_number + 1000000, owner = 'thief' WHERE name = $1`, name)
	require.NoError(t, err)
	n, err := res.RowsAffected()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "no row %q to steal in %s", name, quotedTable)
}

// testsTableExists reports whether schema.rel exists; an empty schema means
// the current schema.
func testsTableExists(t testing.TB, db *sql.DB, schema, rel, kind string) bool {
	t.Helper()
	var ok bool
	err := db.QueryRow(`SELECT EXISTS (
	SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relname = $2 AND c.relkind = $3 AND n.nspname = CASE WHEN $1 = '' THEN current_schema() ELSE $1 END)`,
		schema, rel, kind).Scan(&ok)
	require.NoError(t, err)
	return ok
}

// testsQuote quotes one identifier for the raw SQL of tests.
func testsQuote(s string) string { return pq.QuoteIdentifier(s) }

// testsProxyDriver is a database/sql driver this package does not know: it
// hands connections over to lib/pq, so it reaches a real PostgreSQL. New must
// refuse it, UnsafeNew must accept it.
type testsProxyDriver struct{}

func (testsProxyDriver) Open(name string) (driver.Conn, error) { return (&pq.Driver{}).Open(name) }

// testsNotPostgreSQLDriver is a driver for no database at all.
type testsNotPostgreSQLDriver struct{}

func (testsNotPostgreSQLDriver) Open(string) (driver.Conn, error) {
	return nil, fmt.Errorf("tests: this driver talks to no database")
}

func init() {
	sql.Register("pglock-tests-proxy", testsProxyDriver{})
	sql.Register("pglock-tests-none", testsNotPostgreSQLDriver{})
}

// testsCtx returns a context that ends when t ends or after a generous
// bound, so a broken test fails instead of hanging.
func testsCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testsBound)
	t.Cleanup(cancel)
	return ctx
}
