package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// The tests in this file check how a lock ends: by Release, Close, Do,
// Resign or ForceRelease, by what its holder observes (Done, IsReleased,
// Err), at the instant the statement that frees the row commits.

// isReleaseStatement tells the statement that frees a held row (a plain
// release or one that keeps the row).
func isReleaseStatement(query string) bool {
	return strings.Contains(query, "WITH released AS")
}

// onCommitOf runs f once, inside the first statement match accepts, after
// it committed and before its caller sees the reply.
func onCommitOf(cnt *sqlcount.Counter, match func(string) bool, f func()) {
	var once sync.Once
	cnt.SetFates(func(query string, _ []driver.NamedValue, _ bool) sqlcount.Fate {
		if !match(query) {
			return sqlcount.Fate{}
		}
		return sqlcount.Fate{After: func([][]driver.Value) { once.Do(f) }}
	})
}

// TestReleaseEndsLockBeforeRowIsFreed: the holder's Done is closed before
// the statement that frees its row commits, so a rival that acquires the
// moment it commits never overlaps a holder that still believes. The
// rival's acquire runs inside the release statement, between its commit
// and its reply.
func TestReleaseEndsLockBeforeRowIsFreed(t *testing.T) {
	t.Parallel()
	for _, keep := range []bool{false, true} {
		name := map[bool]string{false: "delete", true: "KeepOnRelease"}[keep]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			table, plain := newTable(t)
			db, cnt := countedDB(t)
			holder := unsafeClient(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
			rival := sameTable(t, plain, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
			var opts []pglock.LockOption
			if keep {
				opts = append(opts, pglock.KeepOnRelease())
			}
			l, err := holder.Acquire("n", opts...)
			require.NoError(t, err)
			var (
				believed bool
				rl       *pglock.Lock
				rerr     error
			)
			onCommitOf(cnt, isReleaseStatement, func() {
				rl, rerr = rival.AcquireContext(testCtx(t), "n", pglock.FailIfLocked())
				believed = !isClosed(l.Done()) || !l.IsReleased() || l.Err() == nil
			})
			require.NoError(t, holder.Release(l))
			require.NoError(t, rerr, "the rival acquires once the release committed")
			defer func() { _ = rival.Release(rl) }()
			assert.False(t, believed, "the releasing holder still believed while the rival held the lock at rvn %d", rl.RecordVersionNumber())
			assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
			s := holder.Stats()
			assert.Equal(t, [3]int64{1, 1, 0}, [3]int64{s.Acquired, s.Released, s.Lost}, "acquired, released, lost")
		})
	}
}

// TestReleaseOfUnreachableDatabaseEndsLock: a release that cannot reach
// the database ends the lock all the same and stops its heartbeat; a later
// Release frees the row.
func TestReleaseOfUnreachableDatabaseEndsLock(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	cnt.SetFailBefore(func(string, []driver.NamedValue) error { return driver.ErrBadConn })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.Error(t, c.ReleaseContext(ctx, l))
	require.True(t, isClosed(l.Done()), "the lock ended though its row could not be freed")
	rvn := l.RecordVersionNumber()
	cnt.SetFailBefore(nil)
	time.Sleep(300 * time.Millisecond) // three heartbeat periods
	got, valid := rowRVN(t, db, table, "n")
	require.True(t, valid)
	require.Equal(t, rvn, got, "no heartbeat after Release")
	require.NoError(t, c.Release(l), "a second Release frees the row")
	require.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
	_, err = c.Get("n")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)
}

// TestReleaseWithEndedContextStopsHeartbeat: Release and Resign with a
// context that already ended end the lock at once and stop its heartbeat;
// the row is freed in the background, so a rival's FailIfLocked gets it
// long before a lease.
func TestReleaseWithEndedContextStopsHeartbeat(t *testing.T) {
	t.Parallel()
	const lease = 5 * time.Second
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	rival := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(time.Second))
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	release := map[string]func(name string) *pglock.Lock{
		"Release": func(name string) *pglock.Lock {
			l, err := c.Acquire(name)
			require.NoError(t, err)
			require.ErrorIs(t, c.ReleaseContext(ended, l), context.Canceled)
			return l
		},
		"Resign": func(name string) *pglock.Lock {
			ld, err := c.NewElection(name).Campaign(testCtx(t), []byte("v"))
			require.NoError(t, err)
			require.ErrorIs(t, ld.Resign(ended), context.Canceled)
			return ld.Lock()
		},
	}
	for how, f := range release {
		t.Run(how, func(t *testing.T) {
			l := f(how)
			require.True(t, isClosed(l.Done()), "Done closed when %s returned", how)
			start := time.Now()
			var rl *pglock.Lock
			require.Eventually(t, func() bool {
				var err error
				rl, err = rival.AcquireContext(testCtx(t), how, pglock.FailIfLocked())
				return err == nil
			}, lease/2, 10*time.Millisecond, "the row was freed in the background")
			t.Logf("%s with an ended context: the rival acquired %v later", how, time.Since(start).Round(time.Millisecond))
			require.NoError(t, rival.Release(rl))
		})
	}
}

// TestDoReleasesWhenFPanics: a panic in f, or runtime.Goexit, still
// releases the lock, stops its heartbeat and cancels f's context, and the
// panic reaches the caller unchanged.
func TestDoReleasesWhenFPanics(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	rival := sameTable(t, db, table)
	var (
		lock *pglock.Lock
		fctx context.Context
	)
	f := func(how string) func(context.Context, *pglock.Lock) error {
		return func(ctx context.Context, l *pglock.Lock) error {
			lock, fctx = l, ctx
			if how == "panic" {
				panic("boom")
			}
			runtime.Goexit()
			return nil
		}
	}
	require.PanicsWithValue(t, "boom", func() { _ = c.Do(testCtx(t), "panic", f("panic")) })
	checkEnded := func(name string) {
		require.True(t, isClosed(lock.Done()), "the lock ended")
		require.ErrorIs(t, fctx.Err(), context.Canceled, "f's context was cancelled")
		l, err := rival.AcquireContext(testCtx(t), name, pglock.FailIfLocked())
		require.NoError(t, err, "the row was freed")
		require.NoError(t, rival.Release(l))
	}
	checkEnded("panic")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Do(testCtx(t), "goexit", f("goexit"))
	}()
	<-done
	checkEnded("goexit")
	require.Zero(t, c.Stats().Held())
}

// TestGuardAndProclaimBoundedByLease: Guard and Proclaim without a
// deadline return within the lease time left when their row is locked by
// another transaction, instead of waiting for it with the lock's
// heartbeat held off.
func TestGuardAndProclaimBoundedByLease(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = 2 * time.Second
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(200*time.Millisecond))
	lockRow := func(name string) {
		blocker, err := db.BeginTx(testCtx(t), nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = blocker.Rollback() })
		_, err = blocker.Exec(`SELECT 1 FROM `+quote(table)+` WHERE name = $1 FOR UPDATE`, name)
		require.NoError(t, err)
	}

	ld, err := c.NewElection("proclaimed").Campaign(testCtx(t), []byte("v"))
	require.NoError(t, err)
	lockRow("proclaimed")
	start := time.Now()
	require.Error(t, ld.Proclaim(context.Background(), []byte("w")))
	proclaimed := time.Since(start)

	l, err := c.Acquire("guarded")
	require.NoError(t, err)
	lockRow("guarded")
	tx, err := db.BeginTx(testCtx(t), nil)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	start = time.Now()
	require.Error(t, l.Guard(context.Background(), tx))
	guarded := time.Since(start)
	t.Logf("with the row locked elsewhere: Proclaim returned after %v, Guard after %v (lease %v)", proclaimed, guarded, lease)
	assert.Less(t, proclaimed, lease+slack)
	assert.Less(t, guarded, lease+slack)
	assert.Greater(t, guarded, lease/2, "Guard waited for the row, within the lease left")
}

// slack is the allowance every time bound of these tests adds for a busy
// machine.
const slack = 500 * time.Millisecond

// TestLateReadBackAppliesOnlyToItsState: a read-back of a heartbeat of
// unknown outcome whose answer arrives after the lock refreshed through
// its own statements changes nothing.
func TestLateReadBackAppliesOnlyToItsState(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	r0 := l.RecordVersionNumber()
	pglock.MarkUnsettled(l, time.Now())
	answer := pglock.AskReadBack(l) // the read-back of the unknown heartbeat starts
	require.NoError(t, c.SendHeartbeat(testCtx(t), l))
	r2 := l.RecordVersionNumber()
	require.Greater(t, r2, r0)
	answer(r0, l.Owner()) // it read the row before the heartbeat moved it
	assert.False(t, l.IsReleased(), "a late read-back ended a lock that still holds its row")
	assert.Equal(t, r2, l.RecordVersionNumber())
	assert.Zero(t, c.Stats().Lost)
	require.NoError(t, c.Release(l))
}

// TestAbandonedAcquireKeepsRowsItDidNotCreate: the cleanup of an acquire
// whose caller gave up before its reply came releases a row that existed
// before (kept with its data), and never deletes it.
func TestAbandonedAcquireKeepsRowsItDidNotCreate(t *testing.T) {
	t.Parallel()
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	for _, keep := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "kept"}[keep]
		l, err := c.Acquire(name, pglock.WithData([]byte("precious")), pglock.KeepOnRelease())
		require.NoError(t, err)
		require.NoError(t, c.Release(l))
		var opts []pglock.LockOption
		if keep {
			opts = append(opts, pglock.KeepOnRelease())
		}
		slow := make(chan struct{})
		onCommitOf(cnt, func(q string) bool { return strings.HasPrefix(q, "WITH current AS") }, func() { <-slow })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err = c.AcquireContext(ctx, name, opts...)
		cancel()
		require.ErrorIs(t, err, pglock.ErrNotAcquired)
		close(slow) // the reply arrives after the caller gave up
		require.Eventually(t, func() bool { return c.Stats().StuckStatements == 0 }, waitBound, 5*time.Millisecond)
		var (
			rvn  sql.NullInt64
			data []byte
		)
		require.Eventually(t, func() bool {
			err := plain.QueryRow(`SELECT record_version_number, data FROM `+quote(table)+` WHERE name = $1`, name).Scan(&rvn, &data)
			require.NoError(t, err, "the kept row of %s is still there", name)
			return !rvn.Valid
		}, waitBound, 5*time.Millisecond, "the row of %s was released", name)
		assert.Equal(t, "precious", string(data), "the data of %s", name)
	}
	cnt.SetFates(nil)
}

// TestCloseRacingReleaseCountsRelease: Close while a Release of the same
// lock is on its way counts the lock released, never lost.
func TestCloseRacingReleaseCountsRelease(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table)
	l, err := c.Acquire("n")
	require.NoError(t, err)
	inRelease, finish := make(chan struct{}), make(chan struct{})
	onCommitOf(cnt, isReleaseStatement, func() {
		close(inRelease)
		<-finish
	})
	released := make(chan error, 1)
	go func() { released <- c.Release(l) }()
	<-inRelease
	closed := make(chan error, 1)
	go func() { closed <- c.Close(testCtx(t)) }()
	time.Sleep(50 * time.Millisecond) // let Close reach the lock, if it is to
	close(finish)
	require.NoError(t, <-released)
	require.NoError(t, <-closed)
	s := c.Stats()
	assert.Equal(t, [3]int64{1, 1, 0}, [3]int64{s.Acquired, s.Released, s.Lost}, "acquired, released, lost")
	assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	assert.NotContains(t, l.Err().Error(), "lost")
}

// TestWaitTimeCountsWaitsThatGaveUp: the mean wait, WaitTime/Waits, counts
// waits that gave up too.
func TestWaitTimeCountsWaitsThatGaveUp(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	h, table := newClientTable(t, db)
	w := sameTable(t, db, table)
	l, err := h.Acquire("n")
	require.NoError(t, err)
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := w.AcquireContext(ctx, "n")
		cancel()
		require.ErrorIs(t, err, pglock.ErrNotAcquired)
	}
	require.NoError(t, h.Release(l))
	s := w.Stats()
	assert.Equal(t, int64(2), s.Waits)
	assert.GreaterOrEqual(t, s.WaitTime, 200*time.Millisecond, "both waits' time counts")
	assert.GreaterOrEqual(t, s.MaxWait, 100*time.Millisecond)
}

// TestAcquireRacingCloseHoldsNothing: an acquire whose statement commits
// while Close runs returns ErrClosed, and its row is freed.
func TestAcquireRacingCloseHoldsNothing(t *testing.T) {
	t.Parallel()
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table)
	closed := make(chan error, 1)
	onCommitOf(cnt, func(q string) bool { return strings.HasPrefix(q, "WITH current AS") }, func() {
		go func() { closed <- c.Close(testCtx(t)) }()
		for !pglock.Closing(c) { // Close began while the statement is in flight
			runtime.Gosched()
		}
	})
	l, err := c.Acquire("n")
	require.NoError(t, <-closed)
	require.ErrorIs(t, err, pglock.ErrClosed)
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.Nil(t, l)
	other := sameTable(t, plain, table)
	require.Eventually(t, func() bool {
		_, err := other.Get("n")
		return errors.Is(err, pglock.ErrLockNotFound)
	}, waitBound, 5*time.Millisecond, "the row won after Close was freed")
	assert.Zero(t, c.Stats().Held())
}

// TestAcquireWithLostReplyRecognisesItsRow: an acquire whose first send
// committed and lost its reply (driver.ErrBadConn) takes the row it made,
// and FailIfLocked does not report the client itself as the holder.
func TestAcquireWithLostReplyRecognisesItsRow(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	var lost atomic.Bool
	cnt.SetFates(func(query string, _ []driver.NamedValue, _ bool) sqlcount.Fate {
		if strings.HasPrefix(query, "WITH current AS") && lost.CompareAndSwap(false, true) {
			return sqlcount.Fate{Kind: sqlcount.LoseReply, Err: driver.ErrBadConn}
		}
		return sqlcount.Fate{}
	})
	start := time.Now()
	l, err := c.AcquireContext(testCtx(t), "n", pglock.FailIfLocked())
	require.True(t, lost.Load(), "the fault was injected")
	require.NoError(t, err, "FailIfLocked found its own row")
	assert.Less(t, time.Since(start), time.Second, "no wait for its own row")
	got, _ := rowRVN(t, db, table, "n")
	assert.Equal(t, got, l.RecordVersionNumber())
	require.NoError(t, c.Release(l))
}

// TestReleaseOfUnsettledLockFreesNewerRow: a release whose first DELETE's
// outcome is unknown, of a lock whose row a heartbeat of unknown outcome
// moved to a newer RVN, frees the row at that RVN.
func TestReleaseOfUnsettledLockFreesNewerRow(t *testing.T) {
	t.Parallel()
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	// The heartbeat commits a newer RVN and loses its reply; its read-back
	// fails: the lock knows the old RVN and is unsettled.
	cnt.SetFailAfter(matchOnce("UPDATE", errReset))
	cnt.SetFailBefore(matchOnce("owner FROM", errReset))
	require.Error(t, c.SendHeartbeat(testCtx(t), l))
	cnt.SetFailBefore(nil)
	moved, _ := rowRVN(t, plain, table, "n")
	require.Greater(t, moved, l.RecordVersionNumber())
	cnt.SetFailAfter(matchOnce("WITH released AS", errReset)) // the release's reply is lost
	require.NoError(t, c.Release(l))
	cnt.SetFailAfter(nil)
	_, err = sameTable(t, plain, table).Get("n")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "the row at the newer RVN was freed")
}

// TestStealCountsOnlyTakeovers: an acquire of a row that was released
// does not count as a steal, even when this client watched the row stale
// before.
func TestStealCountsOnlyTakeovers(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	db := openDB(t)
	h, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	w := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	l, err := h.Acquire("n")
	require.NoError(t, err)
	_, err = w.AcquireContext(testCtx(t), "n", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired) // the sighting
	time.Sleep(lease + 100*time.Millisecond)       // the sighting turns stale
	require.NoError(t, h.Release(l))               // but the holder releases
	wl, err := w.Acquire("n")
	require.NoError(t, err)
	assert.Zero(t, w.Stats().Steals, "a released row is no steal")
	require.NoError(t, w.Release(wl))
}

// TestZeroLockIsReleased: the zero Lock behaves as a released one.
func TestZeroLockIsReleased(t *testing.T) {
	t.Parallel()
	var l pglock.Lock
	require.True(t, isClosed(l.Done()))
	require.True(t, l.IsReleased())
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}
