package pglock_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgtest"
	"cirello.io/pglock/internal/testmain"
)

// srv is the package's PostgreSQL: a throwaway cluster, or PGLOCK_TEST_DSN.
var srv *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// openDB opens a lib/pq pool on the test server, closed when t ends.
func openDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// tableName returns a fresh table name for one test.
func tableName(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "locks_" + hex.EncodeToString(b)
}

// newClient makes a client on a fresh table, created now and dropped when t
// ends.
func newClient(t testing.TB, db *sql.DB, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	opts = append([]pglock.ClientOption{pglock.WithCustomTable(tableName(t))}, opts...)
	c, err := pglock.New(db, opts...)
	require.NoError(t, err)
	require.NoError(t, c.CreateTable())
	t.Cleanup(func() { _ = c.DropTable() })
	return c
}

// sameTable makes another client on the table of c.
func sameTable(t testing.TB, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	require.NoError(t, err)
	return c
}

var bg = context.Background()
