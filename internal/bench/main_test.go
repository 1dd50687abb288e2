// Package bench holds the performance benchmarks of pglock: handoff latency,
// crash takeover delay, uncontended throughput against raw SQL, contention
// on one name, and what held locks cost the server over a long hold (the
// soak benchmarks). Each reports its figures with b.ReportMetric. Run them
// with internal/cmd/perfreport, which prints them as a table, or directly:
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/bench
//
// The soak benchmarks, BenchmarkSoak and BenchmarkSoakManyProcesses, hold
// their locks for about a second unless PGLOCK_SOAK=1 is set, so that the
// command above (and the CI's smoke run) stays short. The full soaks, 60 s
// each:
//
//	PGLOCK_SOAK=1 go test -count=1 -timeout 30m -run '^$' -bench 'Soak' -benchtime 1x ./internal/bench
//
// Their doc comments list the variables that change their parameters.
//
// The package starts its own PostgreSQL only when benchmarks are asked for,
// so a plain `go test ./...` costs nothing here.
package bench

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"os"
	"testing"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

var srv *pgserver.Server

// quick is set (PGLOCK_BENCH_QUICK=1) by the CI's smoke run: benchmarks that
// measure over long windows shorten them, and their figures mean nothing.
var quick = os.Getenv("PGLOCK_BENCH_QUICK") == "1"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envSoakWorker); spec != "" {
		os.Exit(soakWorkerMain(spec)) // a worker of BenchmarkSoakManyProcesses
	}
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	os.Exit(testmain.Run(m, &srv))
}

// openDB opens a lib/pq pool able to serve conns connections at once,
// closed when b ends.
func openDB(b *testing.B, conns int) *sql.DB {
	b.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	b.Cleanup(func() { _ = db.Close() })
	return db
}

// newTable creates a fresh lock table and drops it when b ends.
func newTable(b *testing.B, db *sql.DB) string {
	b.Helper()
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	table := "bench_" + hex.EncodeToString(buf)
	c, err := pglock.New(db, pglock.WithCustomTable(table))
	if err != nil {
		b.Fatal(err)
	}
	if err := c.CreateTable(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.DropTable() })
	return table
}

// client makes a client on table.
func client(b *testing.B, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	b.Helper()
	c, err := pglock.UnsafeNew(db, append([]pglock.ClientOption{pglock.WithCustomTable(table)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return c
}
