package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// poolerCase is one way through PgBouncer: a pool mode, and a driver with
// the connection settings it needs there.
type poolerCase struct {
	mode, driver string
	params       map[string]string
}

func (pc poolerCase) String() string {
	name := pc.mode + "/" + pc.driver
	if m := pc.params["default_query_exec_mode"]; m != "" {
		name += "-" + m
	}
	if pc.params["binary_parameters"] == "yes" {
		name += "-binary"
	}
	return name
}

// poolerCases are the set-ups pglock supports behind PgBouncer: either
// driver with its defaults in session mode; in transaction mode lib/pq
// with its defaults, and pgx with a query mode that sends each statement
// in one round trip without named prepared statements.
var poolerCases = []poolerCase{
	{mode: "session", driver: "postgres"},
	{mode: "session", driver: "pgx"},
	{mode: "transaction", driver: "postgres"},
	{mode: "transaction", driver: "pgx", params: map[string]string{"default_query_exec_mode": "exec"}},
	{mode: "transaction", driver: "pgx", params: map[string]string{"default_query_exec_mode": "simple_protocol"}},
}

// startBouncer starts PgBouncer in mode in front of the test server,
// stopped when t ends. Without the binary the test is skipped, saying how
// to install it (it fails under CI=true).
func startBouncer(t testing.TB, mode string) *pgserver.PgBouncer {
	t.Helper()
	return testmain.StartPgBouncer(t, srv, mode)
}

// openPooled opens a pool through b with pc's driver and settings, closed
// when t ends.
func openPooled(t testing.TB, b *pgserver.PgBouncer, pc poolerCase) *sql.DB {
	t.Helper()
	db, err := sql.Open(pc.driver, dsnWith(b.DSN(), pc.params))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// logCount is a logger that counts the records whose message contains a
// word.
func logCount(word string) (pglock.ClientOption, *atomic.Int64) {
	var n atomic.Int64
	return pglock.WithLevelLogger(slog.New(countHandler{word, &n})), &n
}

// TestPoolerOperations runs every operation of the client through
// PgBouncer, in each supported set-up.
func TestPoolerOperations(t *testing.T) {
	t.Parallel()
	bouncers := map[string]*pgserver.PgBouncer{
		"session":     startBouncer(t, "session"),
		"transaction": startBouncer(t, "transaction"),
	}
	for _, pc := range poolerCases {
		t.Run(pc.String(), func(t *testing.T) {
			t.Parallel()
			db := openPooled(t, bouncers[pc.mode], pc)
			opts := []pglock.ClientOption{pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(100 * time.Millisecond)}
			c, table := newClientTable(t, db, append(opts, pglock.WithOwner("first"))...)
			other := sameTable(t, db, table, append(opts, pglock.WithOwner("second"))...)
			t.Cleanup(func() { _ = other.Close(bg) })
			t.Cleanup(func() { _ = c.Close(bg) })
			poolerLockLife(t, c, other, db)
			poolerElection(t, c, other)
		})
	}
}

// poolerLockLife acquires a lock, keeps it past several leases, reads it,
// guards a transaction with it and releases it to a waiter.
func poolerLockLife(t *testing.T, c, other *pglock.Client, db *sql.DB) {
	t.Helper()
	ctx := testCtx(t)
	l, err := c.AcquireContext(ctx, "job", pglock.WithData([]byte("payload")))
	require.NoError(t, err, "Acquire")
	rvn := l.RecordVersionNumber()
	_, err = other.AcquireContext(ctx, "job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "a held lock is refused")

	time.Sleep(3500 * time.Millisecond) // three leases and a half
	require.NoError(t, l.Err(), "heartbeats kept the lock")
	assert.NotEqual(t, rvn, l.RecordVersionNumber(), "heartbeats moved the RVN")

	got, err := other.GetContext(ctx, "job")
	require.NoError(t, err, "Get")
	assert.Equal(t, "first", got.Owner())
	assert.Equal(t, []byte("payload"), got.Data())
	all, err := other.GetAllLocksContext(ctx)
	require.NoError(t, err, "GetAllLocks")
	require.Len(t, all, 1)
	assert.Equal(t, "job", all[0].Name())

	ledger := newLedger(t, db)
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, l.Guard(ctx, tx), "Guard")
	_, err = tx.ExecContext(ctx, `INSERT INTO `+ledger+` (who) VALUES ($1)`, "first")
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	assert.Equal(t, 1, ledgerCount(t, openDB(t), ledger, "first"), "the guarded write committed")

	waiter := acquireAsync(ctx, other, "job")
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, c.ReleaseContext(ctx, l), "Release")
	w := <-waiter
	require.NoError(t, w.err, "the waiter gets the released lock")
	require.NoError(t, other.ReleaseContext(ctx, w.l))
	_, err = c.GetContext(ctx, "job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "released rows are gone")
}

// poolerElection campaigns, reads and observes the leader, proclaims, and
// hands the leadership over.
func poolerElection(t *testing.T, c, other *pglock.Client) {
	t.Helper()
	ctx := testCtx(t)
	octx, stop := context.WithCancel(ctx)
	defer stop()
	seen := other.NewElection("leader").Observe(octx)
	lead, err := c.NewElection("leader").Campaign(ctx, []byte("v1"))
	require.NoError(t, err, "Campaign")
	leader, err := other.NewElection("leader").Leader(ctx)
	require.NoError(t, err, "Leader")
	assert.Equal(t, "first", leader.Owner)
	assert.Equal(t, []byte("v1"), leader.Value)
	require.NoError(t, lead.Proclaim(ctx, []byte("v2")), "Proclaim")
	waitLeader(t, seen, "first", "v2")

	next := make(chan error, 1)
	go func() {
		ld, err := other.NewElection("leader").Campaign(ctx, []byte("v3"))
		if err == nil {
			err = ld.Resign(ctx)
		}
		next <- err
	}()
	require.NoError(t, lead.Resign(ctx), "Resign")
	require.NoError(t, <-next, "the next candidate takes over")
}

// waitLeader reads observations until one shows owner with value.
func waitLeader(t *testing.T, seen <-chan pglock.Leader, owner, value string) {
	t.Helper()
	timeout := time.After(waitBound)
	for {
		select {
		case ld, ok := <-seen:
			require.True(t, ok, "Observe ended")
			if ld.Owner == owner && string(ld.Value) == value {
				return
			}
		case <-timeout:
			t.Fatalf("Observe never showed %s with %q", owner, value)
		}
	}
}

// TestPoolerLibPQTransactionMode: lib/pq with its defaults sends a
// statement's parse and bind in two round trips, which PgBouncer in
// transaction mode may run on different server connections. Eight
// goroutines acquire and release distinct names for three seconds: none
// may fail, and no row may be left held once every release returned nil.
func TestPoolerLibPQTransactionMode(t *testing.T) {
	t.Parallel()
	b := startBouncer(t, "transaction")
	db := openPooled(t, b, poolerCase{mode: "transaction", driver: "postgres"})
	c, table := newClientTable(t, db)
	t.Cleanup(func() { _ = c.Close(bg) })
	ctx := testCtx(t)
	var (
		ops, failures atomic.Int64
		wg            sync.WaitGroup
		firstErr      sync.Once
		end           = time.Now().Add(3 * time.Second)
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				err := acquireRelease(ctx, c, fmt.Sprintf("g%d-%d", g, i))
				ops.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("first failure: %v", err) })
				}
			}
		}()
	}
	wg.Wait()
	held := heldRows(t, table)
	t.Logf("lib/pq defaults, PgBouncer transaction mode, 8 goroutines, 3s: %d acquire+release, %d failures, %d rows left held",
		ops.Load(), failures.Load(), held)
	assert.Zero(t, failures.Load(), "failures")
	assert.Zero(t, held, "rows left held")
}

// acquireRelease acquires name and releases it.
func acquireRelease(ctx context.Context, c *pglock.Client, name string) error {
	l, err := c.AcquireContext(ctx, name)
	if err != nil {
		return err
	}
	return c.ReleaseContext(ctx, l)
}

// heldRows counts the rows of table that hold a lock, read directly.
func heldRows(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, openDB(t).QueryRow(`SELECT count(*) FROM `+quote(table)+` WHERE record_version_number IS NOT NULL`).Scan(&n))
	return n
}

// TestPoolerHandoff measures handoffs through PgBouncer in transaction
// mode, where LISTEN delivers nothing: with the listener on a direct
// connection (WithSessionDSN) a release wakes the waiter at once; without
// it the waiter's probe finds that notifications do not arrive, the client
// logs that once, and its waiters poll. The pools use lib/pq with
// binary_parameters=yes, or pgx in exec mode, as docs/poolers.md advises.
func TestPoolerHandoff(t *testing.T) {
	t.Parallel()
	b := startBouncer(t, "transaction")
	handoffCases := []poolerCase{
		{mode: "transaction", driver: "postgres", params: map[string]string{"binary_parameters": "yes"}},
		poolerCases[3], // pgx exec
	}
	for _, pc := range handoffCases {
		t.Run(pc.String()+"/listener=direct", func(t *testing.T) {
			t.Parallel()
			h := poolerHandoffs(t, b, pc, pglock.WithSessionDSN(srv.DSN()))
			t.Logf("handoff p50 %v max %v over %d, %d woken by a notification, listening %v", h.p50(), h.max(), len(h.lat), h.notified, h.listening)
			assert.True(t, h.listening, "the direct listener counts as listening")
			assert.GreaterOrEqual(t, 2*h.notified, int64(len(h.lat)), "notifications woke the waiter")
			assert.Less(t, h.p50(), pglock.PollWithoutListener/2, "well under the shortest poll interval")
		})
		t.Run(pc.String()+"/listener=pooled", func(t *testing.T) {
			t.Parallel()
			h := poolerHandoffs(t, b, pc)
			t.Logf("handoff p50 %v max %v over %d, %d woken by a notification, listening %v, warned %d", h.p50(), h.max(), len(h.lat), h.notified, h.listening, h.warned)
			assert.False(t, h.listening, "a LISTEN that cannot deliver does not count")
			assert.Zero(t, h.notified, "no notification arrives through the pooler")
			assert.EqualValues(t, 1, h.warned, "the client says once why it polls")
			assert.LessOrEqual(t, h.p50(), pglock.PollWithoutListener, "waiters poll at the short interval")
		})
	}
}

// handoffs is what poolerHandoffs measured: how long each handoff took
// from Release to the waiter's return, how many a notification woke,
// whether the waiter counted as listening in every wait (within a second of
// waiting), and how many times it logged that notifications do not reach
// it.
type handoffs struct {
	lat              []time.Duration
	notified, warned int64
	listening        bool
}

func (h handoffs) p50() time.Duration { return quantileOf(h.lat, 0.5) }
func (h handoffs) max() time.Duration { return quantileOf(h.lat, 1) }

// poolerHandoffs hands a lock from a holder to a waiter on another client
// through b in pc's set-up, ten times.
func poolerHandoffs(t *testing.T, b *pgserver.PgBouncer, pc poolerCase, opts ...pglock.ClientOption) handoffs {
	t.Helper()
	ctx := testCtx(t)
	holder, table := newClientTable(t, openPooled(t, b, pc))
	t.Cleanup(func() { _ = holder.Close(bg) })
	logger, warned := logCount("do not reach this client's LISTEN session")
	waiter := sameTable(t, openPooled(t, b, pc), table, append(opts, logger)...)
	t.Cleanup(func() { _ = waiter.Close(bg) })
	h := handoffs{listening: true}
	for i := range 10 {
		l, err := holder.AcquireContext(ctx, "handoff")
		require.NoError(t, err)
		waits := waiter.Stats().Waits
		got := acquireAsync(ctx, waiter, "handoff")
		require.True(t, eventually(waitBound, func() bool { return waiter.Stats().Waits > waits || len(got) > 0 }), "the waiter never waited")
		if len(got) > 0 {
			r := <-got
			t.Fatalf("the waiter returned without waiting: %v", r.err)
		}
		settle := time.Second
		if i == 0 {
			settle += pglock.ProbeBound // the listener's probe concludes
		}
		h.listening = h.listening && eventually(settle, func() bool { return waiter.Stats().Listening })
		released := time.Now()
		require.NoError(t, holder.ReleaseContext(ctx, l))
		r := <-got
		require.NoError(t, r.err)
		h.lat = append(h.lat, r.at.Sub(released))
		require.NoError(t, waiter.ReleaseContext(ctx, r.l))
	}
	h.notified, h.warned = waiter.Stats().Handoffs, warned.Load()
	return h
}

// eventually reports whether cond became true within limit; it waits the
// whole limit when it does not.
func eventually(limit time.Duration, cond func() bool) bool {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// quantileOf returns the q-quantile of ds (q=1: the largest).
func quantileOf(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// TestPoolerExclusion runs many clients on one lock name through PgBouncer
// in both modes, with lib/pq's defaults: first the package's contention
// check (no error may surface), then a run in which the server's backends
// are terminated every 50 ms. No two holders may ever overlap.
func TestPoolerExclusion(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"session", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := startBouncer(t, mode)
			contend(t, b.DSN(), 4, 26)
			acquired, failed, killed, overlaps := contendKilled(t, b.DSN(), 4, 4, 4*time.Second)
			t.Logf("%s mode, 16 goroutines on 4 clients for 4s, backends terminated every 50ms: %d acquisitions, %d failed calls, %d backends terminated, %d overlaps",
				mode, acquired, failed, killed, overlaps)
			assert.Zero(t, overlaps, "holders overlapped")
			assert.Positive(t, killed, "backends were terminated")
			assert.Positive(t, acquired, "the lock changed hands")
		})
	}
}

// contendKilled runs clients×perClient goroutines that take one lock name
// over and over for d, through dsn, while the backends serving them are
// terminated every 50 ms. A holder that enters while another holder's lock
// is not ended is an overlap.
func contendKilled(t *testing.T, dsn string, clients, perClient int, d time.Duration) (acquired, failed, killed, overlaps int64) {
	t.Helper()
	app := "pglock_pooler_" + randomHex(6)
	db := openDSN(t, dsnWith(dsn, map[string]string{"application_name": app}))
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(2 * time.Second), pglock.WithHeartbeatFrequency(100 * time.Millisecond)}
	first, table := newClientTable(t, db, opts...)
	t.Cleanup(func() { _ = first.Close(bg) })
	cs := []*pglock.Client{first}
	for len(cs) < clients {
		c := sameTable(t, db, table, opts...)
		t.Cleanup(func() { _ = c.Close(bg) })
		cs = append(cs, c)
	}
	var (
		mu      sync.Mutex
		holders = map[*pglock.Lock]bool{}
		counts  [3]atomic.Int64 // acquired, failed, overlaps
		wg      sync.WaitGroup
		ctx     = testCtx(t)
		end     = time.Now().Add(d)
	)
	stopKiller := killBackends(t, app, &killed)
	for _, c := range cs {
		for range perClient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					holdOnce(ctx, c, &mu, holders, &counts)
				}
			}()
		}
	}
	wg.Wait()
	stopKiller()
	return counts[0].Load(), counts[1].Load(), killed, counts[2].Load()
}

// holdOnce acquires "contended" on c, checks that no other live holder is
// in, holds it a millisecond and releases it. counts are acquisitions,
// failed calls and overlaps.
func holdOnce(ctx context.Context, c *pglock.Client, mu *sync.Mutex, holders map[*pglock.Lock]bool, counts *[3]atomic.Int64) {
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	l, err := c.AcquireContext(actx, "contended")
	if err != nil {
		counts[1].Add(1)
		return
	}
	counts[0].Add(1)
	mu.Lock()
	for other := range holders {
		if !isClosed(other.Done()) && !isClosed(l.Done()) {
			counts[2].Add(1)
		}
	}
	holders[l] = true
	mu.Unlock()
	time.Sleep(time.Millisecond)
	mu.Lock()
	delete(holders, l)
	mu.Unlock()
	if err := l.Close(); err != nil {
		counts[1].Add(1)
	}
}

// killBackends terminates, every 50 ms, the server backends whose
// application_name is app, counting them in killed, until the returned
// function is called.
func killBackends(t *testing.T, app string, killed *int64) (stop func()) {
	t.Helper()
	admin := openDB(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var n int64
			err := admin.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
			if err == nil {
				atomic.AddInt64(killed, n)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
