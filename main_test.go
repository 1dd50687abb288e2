package pglock_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is the package's PostgreSQL: a throwaway cluster, or PGLOCK_TEST_DSN.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// The helpers below are the package's only ways to reach the test server
// and to make tables and clients on it; helpers of each area build on them.

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

// sameTable makes another client on the table of c.
func sameTable(t testing.TB, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

var bg = context.Background()

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
