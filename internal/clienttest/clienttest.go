// Package clienttest gives the tests of the nested modules (cron/,
// prometheus/) clients on the test server of their package.
package clienttest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"testing"

	_ "github.com/lib/pq" // the driver of the clients

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
)

// New returns a client, with a pool of its own, on table on srv, which it
// creates if missing. The client is closed, the table dropped and the pool
// closed when t ends.
func New(t testing.TB, srv *pgserver.Server, table string, opts ...pglock.ClientOption) *pglock.Client {
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

// UniqueTable returns a table name no other test uses.
func UniqueTable() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "locks_" + hex.EncodeToString(b)
}
