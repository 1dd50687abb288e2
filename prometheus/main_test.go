package prometheus

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"

	_ "github.com/lib/pq"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is the package's PostgreSQL: a throwaway cluster, or PGLOCK_TEST_DSN.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// newClient returns a client, with a pool of its own, on table on the test
// server, which it creates if missing. The client is closed, the table
// dropped and the pool closed when t ends.
func newClient(t testing.TB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.TryCreateTable(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Close(context.Background())
		_ = c.DropTable()
	})
	return c
}

// uniqueTable returns a table name no other test uses.
func uniqueTable() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "locks_" + hex.EncodeToString(b)
}
