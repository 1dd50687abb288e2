package bench

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"
)

// monitor reads the server's statistics about one lock table, on a
// connection of its own (its application_name is not the soak's).
type monitor struct {
	db       *sql.DB
	table    string
	app      string // application_name of the soak's sessions
	sessions string // pg_stat_database.sessions (PostgreSQL 14+), or 0
}

// snapshot is what the server says at one moment.
type snapshot struct {
	at time.Time
	// From pg_stat_user_tables: rows updated, of them HOT, autovacuum
	// runs; pg_relation_size and pg_indexes_size.
	updates, hot, autovacuums int64
	size, indexSize           int64
	// From pg_stat_database, this database: transactions committed and
	// rolled back, sessions established.
	xacts, sessions int64
}

// newMonitor opens the monitor's connection; it is closed when tb ends.
func newMonitor(tb testing.TB, app string) *monitor {
	tb.Helper()
	db, err := sql.Open("postgres", dsnWith(srv.DSN(), "application_name", app+"_monitor"))
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	tb.Cleanup(func() { _ = db.Close() })
	m := &monitor{db: db, app: app, sessions: "0"}
	var version int
	if err := db.QueryRow(`SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		tb.Fatal(err)
	}
	if version >= 140000 {
		m.sessions = "d.sessions"
	}
	return m
}

// read takes a snapshot. Each read is a transaction of its own, so it never
// sees the statistics cached by an earlier one.
func (m *monitor) read(ctx context.Context) (snapshot, error) {
	var s snapshot
	err := m.db.QueryRowContext(ctx, `SELECT t.n_tup_upd, t.n_tup_hot_upd, t.autovacuum_count,
	pg_relation_size(t.relid), pg_indexes_size(t.relid),
	d.xact_commit + d.xact_rollback, `+m.sessions+`
FROM pg_stat_user_tables t, pg_stat_database d
WHERE t.relid = $1::regclass AND d.datname = current_database()`, m.table).
		Scan(&s.updates, &s.hot, &s.autovacuums, &s.size, &s.indexSize, &s.xacts, &s.sessions)
	s.at = time.Now()
	if err != nil {
		return s, fmt.Errorf("read the statistics of %s: %w", m.table, err)
	}
	return s, nil
}

func (m *monitor) mustRead(tb testing.TB) snapshot {
	tb.Helper()
	s, err := m.read(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// final returns the snapshot once every session of the soak has ended and
// reported its counts: a session keeps its counts to itself for up to a
// second while it works, and for ten seconds once idle, and reports them
// all when it ends (pg_stat_force_next_flush() would flush only the
// monitor's own). It waits until no session of the soak is left, the
// table's updates are at least the heartbeats the clients counted (each is
// one row updated; a failed statement's rows count too), and two reads a
// tenth of a second apart agree. It fails after 30 s.
func (m *monitor) final(ctx context.Context, heartbeats int64) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var prev *snapshot
	for {
		var live int
		err := m.db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, m.app).Scan(&live)
		if err != nil {
			return snapshot{}, fmt.Errorf("count the soak's sessions: %w", err)
		}
		s, err := m.read(ctx)
		if err != nil {
			return s, err
		}
		switch {
		case live > 0 || s.updates < heartbeats:
			prev = nil
		case prev != nil && prev.updates == s.updates && prev.hot == s.hot && prev.xacts == s.xacts:
			return s, nil
		default:
			prev = &s
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("the statistics did not settle (%d sessions left, %d updates counted, %d heartbeats): %w",
				live, s.updates, heartbeats, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fillfactor returns the table's fillfactor, 100 when it has none set.
func (m *monitor) fillfactor(tb testing.TB) string {
	tb.Helper()
	var ff string
	err := m.db.QueryRow(`SELECT coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
	WHERE option_name = 'fillfactor'), '100') FROM pg_class c WHERE c.oid = $1::regclass`, m.table).Scan(&ff)
	if err != nil {
		tb.Fatal(err)
	}
	return ff
}

// soakResult is what one soak measured. The hold runs from start to end;
// final is read once every session of the soak has ended.
type soakResult struct {
	name        string
	cfg         soakConfig
	fillfactor  string
	acquireTime time.Duration // to acquire every lock
	start, end  snapshot
	final       snapshot
	beatsPerSec float64 // heartbeats the clients counted during the hold
	beatsTotal  int64   // over the whole run
	beatFails   int64   // heartbeat statements that failed, whole run
	lost        int64
	lostWhy     map[string]int64 // lost locks by Lock.Err
}

// report reports r's figures with b.ReportMetric and logs one summary line:
//   - hot-%: the share of the table's row updates that were HOT, from the
//     start of the hold to the end of the run (the release included; every
//     update is a heartbeat);
//   - table-x, index-x: pg_relation_size and pg_indexes_size at the end of
//     the hold over their values at its start;
//   - stmts/s: statements the server served in this database during the
//     hold: the transactions it counted (pg_stat_database xact_commit +
//     xact_rollback; every statement of a soak is a transaction of its
//     own) less the sessions it started, since starting a session counts
//     one transaction too. Each session counts its transactions itself and
//     reports them at most once a second, so each end of the hold is
//     uncertain by about a second's worth;
//   - sessions/s: sessions the server started meanwhile (PostgreSQL 14+);
//   - beats/s: lock refreshes the clients counted (Stats.Heartbeats); the
//     summary gives the mean time between two refreshes of one lock;
//   - lost: locks lost (Stats.Lost, or Lock.Err at the end of the hold);
//   - locks, held-s, heartbeat-ms: the soak's parameters, for perfreport.
func (r soakResult) report(b *testing.B) {
	b.Helper()
	updates, hot := r.final.updates-r.start.updates, r.final.hot-r.start.hot
	hotPct := 100 * float64(hot) / float64(max(updates, 1))
	hold := r.end.at.Sub(r.start.at).Seconds()
	sessions := float64(r.end.sessions-r.start.sessions) / hold
	stmts := float64(r.end.xacts-r.start.xacts)/hold - sessions
	tableX := float64(r.end.size) / float64(max(r.start.size, 1))
	indexX := float64(r.end.indexSize) / float64(max(r.start.indexSize, 1))
	b.ReportMetric(0, "ns/op") // the soak is one measurement; its time says nothing
	b.ReportMetric(hotPct, "hot-%")
	b.ReportMetric(tableX, "table-x")
	b.ReportMetric(indexX, "index-x")
	b.ReportMetric(stmts, "stmts/s")
	b.ReportMetric(sessions, "sessions/s")
	b.ReportMetric(r.beatsPerSec, "beats/s")
	b.ReportMetric(float64(r.lost), "lost")
	b.ReportMetric(float64(r.cfg.locks), "locks")
	b.ReportMetric(hold, "held-s")
	b.ReportMetric(ms(r.cfg.heartbeat), "heartbeat-ms")
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	b.Logf("soak %s: %d locks in %d process(es), heartbeat %v, lease %v, fillfactor %s; acquired in %.1fs, held %.1fs: "+
		"%d row updates, %.2f%% HOT (%d not); table %.2f -> %.2f MB (%.2fx), indexes %.2f -> %.2f MB (%.2fx); "+
		"%.1f statements/s, %.1f new sessions/s; %.0f heartbeats/s, one per lock every %.0f ms "+
		"(%d in all, %d updates counted by the server in all, %d heartbeat statements failed); %d autovacuums; %d locks lost",
		r.name, r.cfg.locks, r.cfg.procs, r.cfg.heartbeat, r.cfg.lease, r.fillfactor, r.acquireTime.Seconds(), hold,
		updates, hotPct, updates-hot, mb(r.start.size), mb(r.end.size), tableX, mb(r.start.indexSize), mb(r.end.indexSize), indexX,
		stmts, sessions, r.beatsPerSec, 1000*float64(r.cfg.locks)/max(r.beatsPerSec, 1),
		r.beatsTotal, r.final.updates, r.beatFails, r.final.autovacuums-r.start.autovacuums, r.lost)
	if r.lost > 0 {
		b.Errorf("soak %s: %d locks lost; by Lock.Err: %v", r.name, r.lost, r.lostWhy)
	}
}
