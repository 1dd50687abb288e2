package pglock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestAcquireHoldsUntilRelease(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("holder"),
		pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	other := sameTable(t, db, table, pglock.WithOwner("other"))

	l, err := c.Acquire("job", pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	require.NotNil(t, l)
	assert.False(t, l.IsReleased())
	assert.Equal(t, "job", l.Name())
	assert.Equal(t, "holder", l.Owner())
	assert.Equal(t, "payload", string(l.Data()))
	rvn, valid := rowRVN(t, db, table, "job")
	require.True(t, valid)
	assert.Equal(t, rvn, l.RecordVersionNumber(), "the lock's RVN is the row's")

	busy, err := other.Acquire("job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NotNil(t, busy, "FailIfLocked returns a non-nil lock, as the original did")
	assert.True(t, busy.IsReleased(), "that lock is not held")
	assert.ErrorIs(t, busy.Close(), pglock.ErrLockAlreadyReleased)
	assert.False(t, l.IsReleased(), "closing the unheld lock did not touch the holder's")

	require.NoError(t, c.Release(l))
	assert.True(t, l.IsReleased())
	_, err = c.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "a plain release deletes the row")
	assert.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, c.ReleaseContext(bg, l), pglock.ErrLockAlreadyReleased)

	l, err = other.Acquire("job", pglock.FailIfLocked())
	require.NoError(t, err, "free again")
	require.NoError(t, other.ReleaseContext(bg, l))
}

func TestAcquireContextWaitsForReleaseOrCtx(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	l, err := c.AcquireContext(bg, "job")
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	got, err := waiter.AcquireContext(ctx, "job")
	assert.Nil(t, got)
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the ctx's error is wrapped too")

	ctx, cancel = context.WithCancel(bg)
	cancel()
	_, err = waiter.AcquireContext(ctx, "free-name")
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "an ended ctx acquires nothing")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = c.Get("free-name")
	assert.ErrorIs(t, err, pglock.ErrLockNotFound)

	// A blocked waiter gets the lock when the holder releases it.
	ctx, cancel = context.WithCancel(bg)
	defer cancel()
	type result struct {
		l   *pglock.Lock
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := waiter.AcquireContext(ctx, "job")
		res <- result{l, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("acquired a held lock: %v", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, l.Close())
	var r result
	select {
	case r = <-res:
	case <-time.After(waitBound):
		t.Fatal("waiter never got the released lock")
	}
	require.NoError(t, r.err)
	assert.False(t, r.l.IsReleased())

	// Cancelling a blocked waiter returns ErrNotAcquired and ctx.Err().
	ctx2, cancel2 := context.WithCancel(bg)
	waits := c.Stats().Waits
	go func() {
		l, err := c.AcquireContext(ctx2, "job")
		res <- result{l, err}
	}()
	require.Eventually(t, func() bool { return c.Stats().Waits > waits }, waitBound, time.Millisecond,
		"the second waiter blocks")
	cancel2()
	r2 := <-res
	assert.Nil(t, r2.l)
	assert.ErrorIs(t, r2.err, pglock.ErrNotAcquired)
	assert.ErrorIs(t, r2.err, context.Canceled)
	require.NoError(t, r.l.Close())
}

func TestAcquireFailIfLockedReturnsAtOnce(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("job", pglock.FailIfLocked(), pglock.WithData([]byte("mine")))
	require.NoError(t, err, "a free lock is taken at once")
	start := time.Now()
	busy, err := other.Acquire("job", pglock.FailIfLocked(), pglock.WithData([]byte("theirs")))
	assert.Less(t, time.Since(start), 10*time.Second, "FailIfLocked does not wait a lease")
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NotNil(t, busy)
	assert.True(t, busy.IsReleased())
	assert.ErrorIs(t, other.Release(busy), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, other.SendHeartbeat(bg, busy), pglock.ErrLockAlreadyReleased)
	data, err := c.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "mine", string(data), "the failed attempt wrote nothing")
	require.NoError(t, l.Close())
}

// TestAcquireFailIfLockedReportsHolder: the lock FailIfLocked returns with
// ErrNotAcquired carries the holder's owner and RVN, as in the original,
// and cannot be released.
func TestAcquireFailIfLockedReportsHolder(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	h, table := newClientTable(t, db, pglock.WithOwner("holder"), pglock.WithHeartbeatFrequency(0))
	w := sameTable(t, db, table, pglock.WithOwner("waiter"), pglock.WithHeartbeatFrequency(0))
	l, err := h.Acquire("n")
	require.NoError(t, err)
	got, err := w.Acquire("n", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NotNil(t, got)
	assert.Equal(t, "holder", got.Owner())
	assert.Equal(t, l.RecordVersionNumber(), got.RecordVersionNumber())
	assert.True(t, got.IsReleased())
	require.ErrorIs(t, got.Close(), pglock.ErrLockAlreadyReleased)
	rvn, valid := rowRVN(t, db, table, "n")
	assert.True(t, valid && rvn == l.RecordVersionNumber(), "the holder's row is untouched")
	require.NoError(t, l.Close())
}

func TestAcquireDataKeptAndReplaced(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithHeartbeatFrequency(0))

	l, err := c.Acquire("job", pglock.WithData([]byte("first")), pglock.KeepOnRelease())
	require.NoError(t, err)
	assert.Equal(t, "first", string(l.Data()))
	require.NoError(t, l.Close())

	// KeepOnRelease: the row stays with a NULL RVN and its data.
	_, valid := rowRVN(t, db, table, "job")
	assert.False(t, valid, "a kept row has a NULL record_version_number")
	data, err := other.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "first", string(data))
	kept, err := other.Get("job")
	require.NoError(t, err)
	assert.Equal(t, "first", string(kept.Data()))
	assert.Zero(t, kept.RecordVersionNumber())
	all, err := other.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, all, 1)
	assert.Equal(t, "job", all[0].Name())

	// Re-acquirable at once; without ReplaceData the stored data is kept.
	l, err = other.Acquire("job", pglock.FailIfLocked(), pglock.WithData([]byte("second")))
	require.NoError(t, err, "a kept row is free at once")
	assert.Equal(t, "first", string(l.Data()), "WithData does not overwrite a kept row")
	require.NoError(t, l.Close())
	_, err = other.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "a release without KeepOnRelease deletes the kept row")

	// ReplaceData overwrites.
	l, err = c.Acquire("job", pglock.WithData([]byte("third")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, err = c.Acquire("job", pglock.WithData([]byte("fourth")), pglock.ReplaceData(), pglock.KeepOnRelease())
	require.NoError(t, err)
	assert.Equal(t, "fourth", string(l.Data()))
	require.NoError(t, l.Close())
	data, err = c.GetDataContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "fourth", string(data))

	// No data at all.
	l, err = c.Acquire("empty")
	require.NoError(t, err)
	assert.Empty(t, l.Data())
	data, err = c.GetData("empty")
	require.NoError(t, err)
	assert.Empty(t, data)
	require.NoError(t, l.Close())

	// WithData copies: changing the caller's slice changes nothing stored.
	buf := []byte("original")
	l, err = c.Acquire("copy", pglock.WithData(buf))
	copy(buf, "XXXXXXXX")
	require.NoError(t, err)
	data, err = c.GetData("copy")
	require.NoError(t, err)
	assert.Equal(t, "original", string(data))
	require.NoError(t, l.Close())
}

// TestAcquireLargeDataRoundTrip is not parallel: moving 32 MiB keeps the server
// and the race-instrumented driver busy for seconds, which would starve the
// short-lease heartbeats of parallel tests.
func TestAcquireLargeDataRoundTrip(t *testing.T) {
	fullSuiteOnly(t)
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	data := make([]byte, 32<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)

	// Each transfer of 32 MiB takes seconds on a loaded machine: one
	// acquire (up and back) and one read.
	l, err := c.Acquire("big", pglock.WithData(data))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, l.Data()), "Data of the acquired lock, as stored")
	var n int
	require.NoError(t, db.QueryRow(`SELECT octet_length(data) FROM `+quote(table)+` WHERE name = 'big'`).Scan(&n))
	assert.Equal(t, len(data), n, "stored size")
	got, err := c.GetData("big")
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "GetData returns the data byte for byte")
	require.NoError(t, l.Close())

	// Every byte value survives.
	all := make([]byte, 256*4)
	for i := range all {
		all[i] = byte(i)
	}
	l, err = c.Acquire("bytes", pglock.WithData(all))
	require.NoError(t, err)
	got, err = c.GetData("bytes")
	require.NoError(t, err)
	assert.Equal(t, all, got)
	require.NoError(t, l.Close())
}

func TestAcquireTakesOverSilentHolder(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	const lease = time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	thief := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	l, err := c.Acquire("job")
	require.NoError(t, err)
	start := time.Now()
	l2, err := thief.AcquireContext(testCtx(t), "job")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), lease, "taken over only after a whole lease of silence")
	assert.NotEqual(t, l.RecordVersionNumber(), l2.RecordVersionNumber())

	select {
	case <-l.Done():
	case <-time.After(waitBound):
		t.Fatal("the silent holder never noticed its lease ran out")
	}
	assert.True(t, l.IsReleased())
	err = c.Release(l)
	assert.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	got, err := c.Get("job")
	require.NoError(t, err)
	assert.Equal(t, l2.Owner(), got.Owner(), "the thief's row is untouched by the old holder's release")
	require.NoError(t, l2.Close())
}

// TestAcquireTakesOverOnlyALeaseAfterLastHeartbeat: a holder that heartbeats
// a few times and then goes silent is taken over no sooner than a whole
// lease after the waiter could first see its last RVN, measured with the
// monotonic clock. Only a lower bound is checked: the upper bound is a speed
// figure (BenchmarkCrashTakeover).
func TestAcquireTakesOverOnlyALeaseAfterLastHeartbeat(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = time.Second
	table, db := newTable(t)
	holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	l, err := holder.Acquire("stale")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	start := time.Now() // before the waiter's first attempt: it cannot see the RVN earlier
	got := acquireAsync(ctx, waiter, "stale")
	// The holder heartbeats for 1.2 leases. On a loaded machine a beat may
	// come later than a lease after the previous one: the lock is then
	// legitimately lost, and that is checked too.
	lastBeat := start
	for range 4 {
		time.Sleep(lease * 3 / 10)
		beat := time.Now() // the new RVN cannot be seen before the heartbeat began
		if err := holder.SendHeartbeat(bg, l); err != nil {
			require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
			require.GreaterOrEqual(t, time.Since(lastBeat), lease, "lost %v after its last heartbeat began: %v", time.Since(lastBeat), err)
			break
		}
		lastBeat = beat
	}
	r := <-got
	require.NoError(t, r.err)
	waited := r.at.Sub(lastBeat)
	t.Logf("taken %v after the last heartbeat began (%.2f leases)", waited, float64(waited)/float64(lease))
	require.GreaterOrEqual(t, waited, lease)
	require.EqualValues(t, 1, waiter.Stats().Steals)
	require.True(t, l.IsReleased(), "the holder's clock ended it a lease after its last heartbeat")
	require.ErrorIs(t, holder.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	require.NoError(t, waiter.Release(r.l))
}

// TestAcquireAfterLongRowWait: an acquire statement that waited long on the
// row's lock (many contenders queue on it) must not hand out a lock whose
// lease, counted from the statement's start, has already run out.
func TestAcquireAfterLongRowWait(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	l, err := c.Acquire("job", pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, l.Close())

	tx, err := db.Begin()
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	_, err = tx.Exec(`SELECT 1 FROM ` + quote(table) + ` WHERE name = 'job' FOR UPDATE`)
	require.NoError(t, err)
	got := make(chan *pglock.Lock, 1)
	go func() {
		l, err := c.AcquireContext(testCtx(t), "job")
		assert.NoError(t, err)
		got <- l
	}()
	time.Sleep(lease) // the acquire statement waits on the row lock
	require.NoError(t, tx.Rollback())
	l = <-got
	require.NotNil(t, l)
	time.Sleep(lease / 2)
	assert.False(t, l.IsReleased(), "a lock fresh from Acquire is held: %v", l.Err())
	require.NoError(t, l.Close())
}

// TestAcquireRowInsertedConcurrently: when another transaction inserts
// the row while the acquire statement runs, the INSERT waits for it, finds
// the conflict and does not take the row, and the fallback SELECT, which
// reads the statement's older snapshot, sees no row: the statement returns
// nothing. The acquirer must then report "not acquired" (FailIfLocked) or
// keep waiting, not fail or think it holds the lock.
func TestAcquireRowInsertedConcurrently(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	q := pq.QuoteIdentifier(table)
	seq := pq.QuoteLiteral(pq.QuoteIdentifier(table + "_rvn"))

	for _, failIfLocked := range []bool{true, false} {
		tx, err := plain.Begin()
		require.NoError(t, err)
		var rvn int64
		require.NoError(t, tx.QueryRow(`INSERT INTO `+q+` (name, record_version_number, owner) VALUES ('race', nextval(`+seq+`::regclass), 'other') RETURNING record_version_number`).Scan(&rvn))

		var rec recorder
		cnt.SetObserver(rec.observe)
		ctx, cancel := context.WithTimeout(bg, 20*time.Second)
		var opts []pglock.LockOption
		if failIfLocked {
			opts = append(opts, pglock.FailIfLocked())
		}
		got := acquireAsync(ctx, c, "race", opts...)
		// Wait until the acquire statement blocks on the uncommitted row.
		require.Eventually(t, func() bool {
			var n int
			err := plain.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0`, table).Scan(&n)
			return err == nil && n > 0
		}, 10*time.Second, time.Millisecond)
		require.NoError(t, tx.Commit())

		if failIfLocked {
			r := <-got
			require.ErrorIs(t, r.err, pglock.ErrNotAcquired)
			require.True(t, r.l.IsReleased())
		} else {
			select {
			case r := <-got:
				t.Fatalf("acquired a row held by another: %v", r.err)
			case <-time.After(300 * time.Millisecond):
			}
			_, err := plain.Exec(`DELETE FROM `+q+` WHERE name = 'race' AND record_version_number = $1`, rvn)
			require.NoError(t, err)
			r := <-got
			require.NoError(t, r.err)
			require.NoError(t, c.Release(r.l))
		}
		cancel()
		cnt.SetObserver(nil)
		ev := rec.take()
		require.NotEmpty(t, ev)
		require.Empty(t, ev[0].Rows, "the first acquire statement saw neither its own row nor the other's")
		require.NoError(t, ev[0].Err)
		_, err = plain.Exec(`DELETE FROM ` + q)
		require.NoError(t, err)
	}
}

func TestAcquireHeartbeatsAndHandsOverWithinOneClient(t *testing.T) {
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(200*time.Millisecond))
	l, err := c.Acquire("a", pglock.WithData([]byte("hello")))
	require.NoError(t, err)
	require.False(t, l.IsReleased())
	rvn := l.RecordVersionNumber()
	time.Sleep(500 * time.Millisecond)
	require.NotEqual(t, rvn, l.RecordVersionNumber())
	_, err = c.Acquire("a", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	got := make(chan time.Time)
	go func() {
		l2, err := c.Acquire("a")
		if err == nil {
			got <- time.Now()
			_ = l2.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	rel := time.Now()
	require.NoError(t, l.Close())
	at := <-got
	t.Logf("handoff %v", at.Sub(rel))
	require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}

func TestAcquireExcludesUnderContention(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	contend(t, srv.DSN(), 4, 26)
}

// TestAcquireExcludesUnderSerializableContention: every session SERIALIZABLE
// by default, as some deployments configure it; serialization failures must
// be retried inside the client, never surface.
func TestAcquireExcludesUnderSerializableContention(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	dsn := dsnWith(srv.DSN(), map[string]string{"options": "-c default_transaction_isolation=serializable"})
	db := openDSN(t, dsn)
	var level string
	require.NoError(t, db.QueryRow(`SHOW default_transaction_isolation`).Scan(&level))
	require.Equal(t, "serializable", level, "the DSN option applies")
	contend(t, dsn, 4, 26)
}

// contend runs clients×perClient goroutines that each take the one
// lock once, and checks that no two ever hold it at once and that no error
// surfaces. It returns how many serialization failures were retried.
func contend(t *testing.T, dsn string, clients, perClient int) int64 {
	t.Helper()
	db := openDSN(t, dsn)
	var retried atomic.Int64
	logger := pglock.WithLevelLogger(slog.New(countHandler{"serialization failure", &retried}))
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(10 * time.Second), pglock.WithHeartbeatFrequency(time.Second), logger}
	first, table := newClientTable(t, db, opts...)
	cs := []*pglock.Client{first}
	for len(cs) < clients {
		cs = append(cs, sameTable(t, db, table, opts...))
	}

	var (
		inside, maxInside, acquired atomic.Int64
		wg                          sync.WaitGroup
		errs                        = make(chan error, clients*perClient)
		start                       = make(chan struct{})
	)
	ctx := testCtx(t)
	for _, c := range cs {
		for range perClient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := c.AcquireContext(ctx, "contended")
				if err != nil {
					errs <- err
					return
				}
				acquiredAt := time.Now()
				n := inside.Add(1)
				for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
				}
				acquired.Add(1)
				time.Sleep(time.Millisecond) // hold it a little
				inside.Add(-1)
				held := time.Now()
				if err := l.Close(); err != nil {
					errs <- fmt.Errorf("release %v after acquired (%v to release): %w", held.Sub(acquiredAt), time.Since(held), err)
				}
			}()
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.EqualValues(t, 1, maxInside.Load(), "holders overlapped")
	assert.EqualValues(t, clients*perClient, acquired.Load())
	t.Logf("%d acquisitions by %d goroutines on %d clients in %v; %d serialization failures retried",
		acquired.Load(), clients*perClient, clients, time.Since(began).Round(time.Millisecond), retried.Load())
	return retried.Load()
}

// countHandler counts slog records whose message contains a word.
type countHandler struct {
	word string
	n    *atomic.Int64
}

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.word) {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// TestEveryAcquireErrorWrapsErrNotAcquired fails acquisitions every way
// but a held lock (a name that cannot be stored, a missing table, a server
// that cannot be reached) and checks that each error wraps ErrNotAcquired
// besides its reason.
func TestEveryAcquireErrorWrapsErrNotAcquired(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c := newClient(t, db)
	_, err := c.Acquire("")
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "invalid name")
	assert.ErrorIs(t, err, pglock.ErrInvalidName)

	missing, err := pglock.New(db, pglock.WithCustomTable(tableName(t)))
	require.NoError(t, err)
	_, err = missing.Acquire("x")
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "missing table")
	var other *pglock.OtherError
	assert.ErrorAs(t, err, &other, "missing table")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	unreachable, err := pglock.New(openDSN(t, "postgres://postgres@"+closed+"/postgres?sslmode=disable"))
	require.NoError(t, err)
	_, err = unreachable.AcquireContext(testCtx(t), "x")
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "unreachable server")
	var unavailable *pglock.UnavailableError
	assert.ErrorAs(t, err, &unavailable, "unreachable server")
}

// TestShortestLeaseAcquires acquires with the shortest lease New accepts
// and heartbeats off: the statement's own bound does not end it.
func TestShortestLeaseAcquires(t *testing.T) {
	t.Parallel()
	c := newClient(t, openDB(t), pglock.WithLeaseDuration(pglock.MinLeaseDuration), pglock.WithHeartbeatFrequency(0))
	l, err := c.AcquireContext(testCtx(t), "tiny-lease")
	require.NoError(t, err)
	_ = c.Release(l) // the lease may have lapsed already
}
