package bench

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"cirello.io/pglock"
)

// BenchmarkSoak measures what held locks cost the server: one client
// (pglock.New on a lib/pq pool) acquires 5,000 locks, holds them for 60 s
// with a 200 ms heartbeat and a 2 s lease, then releases them. It runs on
// a table made by CreateTable (fillfactor 50) and on one made by the
// original library's DDL (fillfactor 100), and reports, for each, the share
// of HOT updates, the growth of the table and of its indexes over the
// hold, the statements per second the server served, the heartbeats per
// second and the locks lost (it fails if any was lost); see
// soakResult.report. The soak runs once per sub-benchmark, whatever b.N.
//
// Without PGLOCK_SOAK=1 it is a smoke test: 300 locks held for 1 s. The
// full soak:
//
//	PGLOCK_SOAK=1 go test -count=1 -timeout 30m -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x ./internal/bench
//
// PGLOCK_SOAK_DURATION, PGLOCK_SOAK_LOCKS, PGLOCK_SOAK_HEARTBEAT and
// PGLOCK_SOAK_LEASE override the parameters (a Go duration, or a count);
// PGLOCK_SOAK_LOG=1 writes the client's log to stderr.
func BenchmarkSoak(b *testing.B) {
	cfg := loadSoakConfig(b, envSoakPrefix,
		soakConfig{duration: 60 * time.Second, locks: 5000, heartbeat: 200 * time.Millisecond, lease: 2 * time.Second, procs: 1},
		soakConfig{duration: time.Second, locks: 300, heartbeat: 200 * time.Millisecond, lease: 2 * time.Second, procs: 1})
	tables := []struct {
		name string
		make func(testing.TB, *sql.DB) string
	}{
		{"table=CreateTable", createSoakTable},
		{"table=original", originalSoakTable},
	}
	for _, t := range tables {
		b.Run(t.name, func(b *testing.B) {
			r := runSoak(b, cfg, t.make)
			r.name = t.name
			// b.Loop makes the testing package call this function once,
			// whatever -benchtime: the soak above is the measurement.
			for b.Loop() {
			}
			r.report(b)
		})
	}
}

// createSoakTable makes a fresh lock table with CreateTable; it is dropped
// when tb ends.
func createSoakTable(tb testing.TB, db *sql.DB) string {
	tb.Helper()
	table := "soak_" + randomSuffix()
	c, err := pglock.New(db, pglock.WithCustomTable(table))
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.CreateTable(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.DropTable() })
	return table
}

// originalSoakTable makes a fresh lock table and sequence with the original
// library's DDL, verbatim (so the default fillfactor, 100); they are
// dropped when tb ends.
func originalSoakTable(tb testing.TB, db *sql.DB) string {
	tb.Helper()
	table := "soak_orig_" + randomSuffix()
	for _, q := range []string{
		`CREATE TABLE ` + table + ` (
			name CHARACTER VARYING(255) PRIMARY KEY,
			record_version_number BIGINT,
			data BYTEA,
			owner CHARACTER VARYING(255)
		);`,
		`CREATE SEQUENCE ` + table + `_rvn CYCLE OWNED BY ` + table + `.record_version_number`,
	} {
		if _, err := db.Exec(q); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() { _, _ = db.Exec(`DROP TABLE IF EXISTS ` + table) })
	return table
}

// runSoak runs one soak of cfg on a table made by makeTable: acquire,
// settle, hold, release, and the server's final counts.
func runSoak(b *testing.B, cfg soakConfig, makeTable func(testing.TB, *sql.DB) string) soakResult {
	b.Helper()
	app := soakAppName()
	mon := newMonitor(b, app)
	mon.table = makeTable(b, mon.db)
	db := openDSN(b, dsnWith(srv.DSN(), "application_name", app), soakReleasers+2)
	c, err := pglock.New(db, append(soakLogger(), pglock.WithCustomTable(mon.table),
		pglock.WithLeaseDuration(cfg.lease), pglock.WithHeartbeatFrequency(cfg.heartbeat))...)
	if err != nil {
		b.Fatal(err)
	}
	closeClient := sync.OnceValue(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return c.Close(ctx)
	})
	b.Cleanup(func() { _ = closeClient() })
	r := soakResult{cfg: cfg, fillfactor: mon.fillfactor(b)}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.acquireTimeout())
	defer cancel()
	t0 := time.Now()
	locks, err := acquireAll(ctx, c, soakNames(0, cfg.locks))
	if err != nil {
		b.Fatal(err)
	}
	r.acquireTime = time.Since(t0)
	ctx, cancel = context.WithTimeout(context.Background(), cfg.acquireTimeout())
	defer cancel() // a fresh bound for the release
	closeIdle(db, soakReleasers+2)
	time.Sleep(cfg.settle())

	r.start = mon.mustRead(b)
	beats := c.Stats().Heartbeats
	time.Sleep(cfg.duration)
	r.end = mon.mustRead(b)
	st := c.Stats()
	r.beatsPerSec = float64(st.Heartbeats-beats) / r.end.at.Sub(r.start.at).Seconds()
	r.lost, r.lostWhy = lostLocks(locks)
	r.lost = max(r.lost, st.Lost)

	// A failed release fails the benchmark, after the figures are in.
	if err := releaseAll(ctx, c, locks); err != nil {
		b.Error(err)
	}
	if err := closeClient(); err != nil {
		b.Error(err)
	}
	st = c.Stats()
	r.beatsTotal, r.beatFails = st.Heartbeats, st.HeartbeatFailures
	_ = db.Close() // its sessions end and report their counts
	if r.final, err = mon.final(context.Background(), r.beatsTotal); err != nil {
		b.Fatal(err)
	}
	return r
}

// openDSN opens a lib/pq pool on dsn able to serve conns connections at
// once, closed when tb ends.
func openDSN(tb testing.TB, dsn string, conns int) *sql.DB {
	tb.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}
