package cron

import (
	"os"
	"testing"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/clienttest"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is the package's PostgreSQL: a throwaway cluster, or PGLOCK_TEST_DSN.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// newClient returns a client on table (see clienttest.New).
func newClient(t testing.TB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	return clienttest.New(t, srv, table, opts...)
}

// uniqueTable returns a table name no other test uses.
func uniqueTable() string { return clienttest.UniqueTable() }
