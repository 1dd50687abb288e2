package pglock_test

import (
	"database/sql/driver"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// Faults in these tests are injected by the counting driver, around a
// statement that really runs (or really does not): a network cut exactly
// between the server's commit and the client reading the reply, or exactly
// before a statement leaves, cannot be provoked on demand by a real fault.

// doneClock records when a lock's Done closed.
type doneClock struct {
	at       time.Time
	recorded chan struct{} // closed once at is set
}

// watchDone starts recording when l's Done closes; the goroutine ends with
// the lock, or when t ends.
func watchDone(t *testing.T, l *pglock.Lock) *doneClock {
	t.Helper()
	d := &doneClock{recorded: make(chan struct{})}
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-l.Done():
			d.at = time.Now()
			close(d.recorded)
		case <-stop:
		}
	}()
	t.Cleanup(func() { close(stop); <-exited })
	return d
}

// closedAt waits up to limit for Done to close and returns when it did, or
// the zero time if it did not.
func (d *doneClock) closedAt(limit time.Duration) time.Time {
	select {
	case <-d.recorded:
		return d.at
	case <-time.After(limit):
		return time.Time{}
	}
}

// fault is a hook for the counting driver that fails the first statement
// whose text contains substr with err, and lets every other through.
type fault struct {
	substr string
	err    error
	done   atomic.Bool
	fired  chan struct{}
}

// failOnce returns a fault for the first statement containing substr.
func failOnce(substr string, err error) *fault {
	return &fault{substr: substr, err: err, fired: make(chan struct{})}
}

// hook is the function to give SetFailBefore or SetFailAfter.
func (f *fault) hook(query string, _ []driver.NamedValue) error {
	if strings.Contains(query, f.substr) && f.done.CompareAndSwap(false, true) {
		close(f.fired)
		return f.err
	}
	return nil
}

// wait waits until the fault was injected.
func (f *fault) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.fired:
	case <-time.After(waitBound):
		t.Fatalf("no statement containing %q was sent", f.substr)
	}
}

// matchOnce is failOnce's hook, for faults the test need not wait for.
func matchOnce(substr string, err error) func(string, []driver.NamedValue) error {
	return failOnce(substr, err).hook
}

// TestReadBackDatesLeaseFromEarliestHeartbeat: heartbeat U1 commits but its
// reply and its read-back are lost; a waiter sees U1's RVN and starts its
// lease clock; heartbeat U2 fails before reaching the server and its
// read-back finds U1's RVN. The lease found by that read-back counts from
// U1's start, not U2's: the holder gives the lock up before the waiter
// takes it.
func TestReadBackDatesLeaseFromEarliestHeartbeat(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	holder := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	waiter := sameTable(t, plain, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	l, err := holder.Acquire("n")
	require.NoError(t, err)
	held := watchDone(t, l)

	u1 := time.Now()
	cnt.SetFailAfter(matchOnce("UPDATE", errReset))
	cnt.SetFailBefore(matchOnce("owner FROM", errReset)) // the read-back
	require.Error(t, holder.SendHeartbeat(bg, l))
	cnt.SetFailAfter(nil)
	cnt.SetFailBefore(nil)

	got := acquireAsync(testCtx(t), waiter, "n")
	time.Sleep(600 * time.Millisecond)
	cnt.SetFailBefore(matchOnce("UPDATE", errReset))
	require.Error(t, holder.SendHeartbeat(bg, l), "U2 fails before reaching the server")
	cnt.SetFailBefore(nil)

	r := <-got
	require.NoError(t, r.err)
	defer func() { _ = waiter.Release(r.l) }()
	gaveUp := held.closedAt(waitBound)
	overlap := gaveUp.Sub(r.at)
	t.Logf("waiter acquired %v after U1; holder gave up %v after U1; overlap %v",
		r.at.Sub(u1), gaveUp.Sub(u1), overlap)
	assert.LessOrEqual(t, overlap, time.Duration(0), "the holder still believed it held the lock after the waiter took it")
}

// TestReleaseOfUnknownOutcomeEndsLock: the DELETE of a release commits (and
// wakes a waiter), but its reply is lost. The lock must not go on counting
// itself held: Done is closed by the time Release returns.
func TestReleaseOfUnknownOutcomeEndsLock(t *testing.T) {
	t.Parallel()
	const lease = 5 * time.Second
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	holder := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(time.Second))
	waiter := sameTable(t, plain, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(time.Second))
	l, err := holder.Acquire("n")
	require.NoError(t, err)
	held := watchDone(t, l)
	got := acquireAsync(testCtx(t), waiter, "n")
	require.Eventually(t, func() bool { return waiter.Stats().Listening }, waitBound, time.Millisecond)

	cnt.SetFailAfter(matchOnce("DELETE", errReset))
	rerr := holder.Release(l)
	returned := time.Now()
	cnt.SetFailAfter(nil)
	endedOnReturn := l.IsReleased()

	r := <-got
	require.NoError(t, r.err)
	defer func() { _ = waiter.Release(r.l) }()
	gaveUp := held.closedAt(lease)
	t.Logf("release returned %v; waiter acquired %v after it; holder's Done closed %v after it",
		rerr, r.at.Sub(returned), gaveUp.Sub(returned))
	assert.True(t, endedOnReturn, "Release returned while the lock still counted itself held")
}

// TestProclaimAfterUnknownHeartbeat: a heartbeat commits but its reply and
// read-back are lost, so the leader's known RVN is the old one. Proclaim
// finds no row at that RVN; it must read the row back before calling the
// leadership lost.
func TestProclaimAfterUnknownHeartbeat(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(0))
	lead, err := c.NewElection("e").Campaign(testCtx(t), []byte("v1"))
	require.NoError(t, err)
	cnt.SetFailAfter(matchOnce("UPDATE", errReset))
	cnt.SetFailBefore(matchOnce("owner FROM", errReset))
	require.Error(t, c.SendHeartbeat(bg, lead.Lock()))
	cnt.SetFailAfter(nil)
	cnt.SetFailBefore(nil)

	require.NoError(t, lead.Proclaim(bg, []byte("v2")), "a heartbeat of our own moved the row")
	assert.NoError(t, lead.Err())
	got, err := c.NewElection("e").Leader(bg)
	require.NoError(t, err)
	assert.Equal(t, "v2", string(got.Value))
	require.NoError(t, lead.Resign(bg))
}

// TestResettleReadsBackInOneStatement: when a batch heartbeat finds many
// unsettled locks moved, it reads them back in one statement, not one each.
func TestResettleReadsBackInOneStatement(t *testing.T) {
	t.Parallel()
	const locks = 20
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(200*time.Millisecond))
	held := make([]*pglock.Lock, locks)
	for i := range held {
		l, err := c.Acquire(string(rune('a' + i)))
		require.NoError(t, err)
		held[i] = l
	}
	var rec recorder
	cnt.SetObserver(rec.observe)
	// One batch commits but its reply and its read-back are lost: every
	// lock is unsettled, its known RVN behind the row's.
	readBack := failOnce("owner FROM", errReset)
	cnt.SetFailAfter(matchOnce("unnest", errReset))
	cnt.SetFailBefore(readBack.hook)
	readBack.wait(t)
	cnt.SetFailAfter(nil)
	cnt.SetFailBefore(nil)
	beats := c.Stats().Heartbeats
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= beats+2*locks }, waitBound, time.Millisecond)
	cnt.SetObserver(nil)
	readBacks := 0
	for _, e := range rec.take() {
		if strings.Contains(e.Query, "owner FROM") && e.Err == nil {
			readBacks++
		}
	}
	for _, l := range held {
		require.NoError(t, l.Err(), "no lock lost")
		require.NoError(t, c.Release(l))
	}
	t.Logf("read-backs for %d unsettled locks: %d", locks, readBacks)
	assert.Equal(t, 1, readBacks, "one read-back for the whole batch")
}

// TestHeartbeatNotRetriedSilentlyOnBadConn: lib/pq reports EOF after a
// statement was sent as driver.ErrBadConn, and database/sql then runs the
// statement again on another connection without telling the caller. A
// heartbeat that committed before such an error must not cost the lock.
func TestHeartbeatNotRetriedSilentlyOnBadConn(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	cnt.SetFailAfter(matchOnce("unnest", driver.ErrBadConn))
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= 5 || l.IsReleased() }, waitBound, time.Millisecond)
	cnt.SetFailAfter(nil)
	assert.NoError(t, l.Err(), "the lock was lost to a heartbeat of its own")
	_ = c.Release(l)
}
