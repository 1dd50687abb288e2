package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// Faults in these tests are injected by the counting driver, around a
// statement that really runs (or really does not): a network cut exactly
// between the server's commit and the client reading the reply, or exactly
// before a statement leaves, cannot be provoked on demand by a real fault.
// The unsettled-heartbeat tests go one step further and reproduce the state
// such a fault leaves (MarkUnsettled) after moving the row themselves.

// doneClock records when a lock's Done closed.
type doneClock struct {
	at       time.Time
	recorded chan struct{} // closed once at is set
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

// fault is a hook for the counting driver that fails the first statement
// whose text contains substr with err, and lets every other through.
type fault struct {
	substr string
	err    error
	done   atomic.Bool
	fired  chan struct{}
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

// failOnce returns a fault for the first statement containing substr.
func failOnce(substr string, err error) *fault {
	return &fault{substr: substr, err: err, fired: make(chan struct{})}
}

// matchOnce is failOnce's hook, for faults the test need not wait for.
func matchOnce(substr string, err error) func(string, []driver.NamedValue) error {
	return failOnce(substr, err).hook
}

// TestUnknownHeartbeatOutcomeKeepsLock: a heartbeat whose UPDATE committed but
// whose caller saw an error must leave the lock held, at the RVN the row
// now carries.
//
// The fault is injected by the counting driver after the statement has run
// to completion and committed: a real network cut exactly between the
// server's commit and the client reading the reply cannot be provoked
// reliably (pg_terminate_backend or a stopped server land before or after
// the commit, never on demand in between). Two errors are tried: a reset
// connection, and the caller's context ending right after the commit (the
// original library's issue 175).
func TestUnknownHeartbeatOutcomeKeepsLock(t *testing.T) {
	t.Parallel()
	reset := func(context.CancelFunc) error { return errReset }
	cancelled := func(cancel context.CancelFunc) error { cancel(); return context.Canceled }
	for _, tc := range []struct {
		name   string
		inject func(context.CancelFunc) error
		bg     bool // background heartbeat instead of SendHeartbeat
	}{
		{"SendHeartbeat/reset", reset, false},
		{"SendHeartbeat/ctx-ended", cancelled, false},
		{"background/reset", reset, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table, plain := newTable(t)
			db, cnt := countedDB(t)
			const lease = 5 * time.Second
			freq := time.Duration(0)
			if tc.bg {
				freq = 200 * time.Millisecond
			}
			c := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
			l, err := c.Acquire("unknown")
			require.NoError(t, err)
			before := l.RecordVersionNumber()

			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			var injected atomic.Int32
			cnt.SetFailAfter(func(query string, _ []driver.NamedValue) error {
				if !strings.HasPrefix(query, "UPDATE") && !strings.Contains(query, "unnest") {
					return nil // the re-read that settles the outcome goes through
				}
				if !injected.CompareAndSwap(0, 1) {
					return nil
				}
				return tc.inject(cancel)
			})
			if tc.bg {
				require.Eventually(t, func() bool { return c.Stats().HeartbeatFailures >= 1 }, 10*time.Second, time.Millisecond)
				cnt.SetFailAfter(nil)
				// Let a few more ticks run from whatever RVN was settled.
				beats := c.Stats().Heartbeats
				require.Eventually(t, func() bool { return c.Stats().Heartbeats >= beats+2 }, 10*time.Second, time.Millisecond)
			} else {
				err = c.SendHeartbeat(ctx, l)
				cnt.SetFailAfter(nil)
				require.Error(t, err)
				require.NotErrorIs(t, err, pglock.ErrLockAlreadyReleased)
				var stored int64
				require.NoError(t, plain.QueryRow(`SELECT record_version_number FROM `+pq.QuoteIdentifier(table)+` WHERE name = 'unknown'`).Scan(&stored))
				require.NotEqual(t, before, stored, "the injected heartbeat committed")
				require.Eventually(t, func() bool { return stored == l.RecordVersionNumber() }, waitBound, time.Millisecond,
					"the lock took the committed RVN")
				require.NoError(t, c.SendHeartbeat(bg, l), "the next heartbeat starts from the right RVN")
			}
			require.EqualValues(t, 1, injected.Load())
			require.False(t, l.IsReleased(), "%v", l.Err())
			require.Zero(t, c.Stats().Lost)
			require.NoError(t, c.Release(l), "the release matches the row's RVN")
		})
	}
}

// TestReadBackDatesLeaseFromEarliestHeartbeat: heartbeat U1 commits but its
// reply and its read-back are lost; a waiter sees U1's RVN and starts its
// lease clock; heartbeat U2 fails before reaching the server and its
// read-back finds U1's RVN. The lease found by that read-back counts from
// U1's start, not U2's: the holder gives the lock up before the waiter
// takes it.
func TestReadBackDatesLeaseFromEarliestHeartbeat(t *testing.T) {
	fullSuiteOnly(t)
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

// TestUnsettledHeartbeatNotTakenForLoss: a lock whose last heartbeat landed
// unseen is not taken for lost by whatever finds its row moved next.
func TestUnsettledHeartbeatNotTakenForLoss(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	ledger := newLedger(t, db)

	l, err := c.Acquire("send")
	require.NoError(t, err)
	rvn := landUnseen(t, db, table, l)
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Equal(t, rvn, l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Greater(t, l.RecordVersionNumber(), rvn)

	l2, err := c.Acquire("guard")
	require.NoError(t, err)
	landUnseen(t, db, table, l2)
	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l2.Guard(bg, tx))
	_, err = tx.Exec(`INSERT INTO ` + ledger + ` (who) VALUES ('unsettled')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	l3, err := c.Acquire("release")
	require.NoError(t, err)
	landUnseen(t, db, table, l3)
	require.NoError(t, c.Release(l3))
	_, err = c.Get("release")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)

	// Moved by someone else: lost all the same.
	l4, err := c.Acquire("stolen")
	require.NoError(t, err)
	pglock.MarkUnsettled(l4, time.Now())
	stealRow(t, db, table, "stolen")
	require.ErrorIs(t, c.SendHeartbeat(bg, l4), pglock.ErrLockAlreadyReleased)
	require.True(t, isClosed(l4.Done()))

	require.NoError(t, c.Release(l))
	require.NoError(t, c.Release(l2))
}

// TestUnsettledBackgroundHeartbeatCarriesOn: the background heartbeat reads
// the row back too, and carries on.
func TestUnsettledBackgroundHeartbeatCarriesOn(t *testing.T) {
	t.Parallel()
	const lease, freq = 3 * time.Second, 100 * time.Millisecond
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := c.Acquire("background")
	require.NoError(t, err)
	// Move the row in a transaction: until it commits, heartbeats skip the
	// row, so none can land between the move and the mark.
	tx, err := db.Begin()
	require.NoError(t, err)
	start := time.Now()
	var moved int64
	err = tx.QueryRow(`UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn')
		WHERE name = $1 RETURNING record_version_number`, l.Name()).Scan(&moved)
	require.NoError(t, err)
	pglock.MarkUnsettled(l, start)
	require.NoError(t, tx.Commit())
	// Several heartbeats later the lock is held, past the moved RVN.
	deadline := time.Now().Add(lease)
	for l.RecordVersionNumber() <= moved && time.Now().Before(deadline) {
		time.Sleep(freq)
	}
	require.NoError(t, l.Err(), "lost after a heartbeat landed unseen")
	require.Greater(t, l.RecordVersionNumber(), moved)
	require.NoError(t, c.Release(l))
}

// landUnseen does what a heartbeat of l does when its commit
// succeeds but its answer is lost, and its read back fails: the row gets a
// new RVN (same owner) that the lock does not know.
func landUnseen(t *testing.T, db *sql.DB, table string, l *pglock.Lock) int64 {
	t.Helper()
	start := time.Now()
	var rvn int64
	err := db.QueryRow(`UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn')
		WHERE name = $1 AND record_version_number = $2 RETURNING record_version_number`,
		l.Name(), l.RecordVersionNumber()).Scan(&rvn)
	require.NoError(t, err)
	pglock.MarkUnsettled(l, start)
	return rvn
}
