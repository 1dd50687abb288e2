package bench

import (
	"context"
	"database/sql"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"cirello.io/pglock"
	"cirello.io/pglock/internal/testmain"
)

// BenchmarkHandoffBehindPgBouncer is BenchmarkHandoff with holder and
// waiter on pools through PgBouncer in transaction mode, where a LISTEN
// delivers nothing, with pgx in exec mode or lib/pq with
// binary_parameters=yes, as docs/poolers.md advises. With
// listener=direct the waiter listens on a direct connection
// (WithSessionDSN) and a release wakes it; with listener=pooled it has
// none, finds that its LISTEN cannot deliver, and polls.
func BenchmarkHandoffBehindPgBouncer(b *testing.B) {
	bouncer := testmain.StartPgBouncer(b, srv, "transaction")
	for _, drv := range []struct{ name, driver, dsn string }{
		{"pgx-exec", "pgx", bouncer.DSN() + "&default_query_exec_mode=exec"},
		{"lib-pq-binary", "postgres", bouncer.DSN() + "&binary_parameters=yes"},
	} {
		for _, listener := range []string{"direct", "pooled"} {
			b.Run(drv.name+"/listener="+listener, func(b *testing.B) {
				hdb, wdb := openPooled(b, drv.driver, drv.dsn), openPooled(b, drv.driver, drv.dsn)
				table := newTable(b, openDB(b, 1))
				var opts []pglock.ClientOption
				if listener == "direct" {
					opts = append(opts, pglock.WithSessionDSN(srv.DSN()))
				}
				waiter := client(b, wdb, table, opts...)
				b.Cleanup(func() { _ = waiter.Close(context.Background()) })
				benchmarkHandoff(b, client(b, hdb, table), waiter)
			})
		}
	}
}

// openPooled opens a pool of driver on dsn able to serve 4 connections at
// once, closed when b ends.
func openPooled(b *testing.B, driver, dsn string) *sql.DB {
	b.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	b.Cleanup(func() { _ = db.Close() })
	return db
}
