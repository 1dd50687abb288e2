package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestFailoverSync fails over to a synchronous standby within the lease:
// every commit the clients saw is on the standby, so every lock survives,
// nobody else takes a held name, every acquisition is kept, and release
// notifications flow again from the new primary.
func TestFailoverSync(t *testing.T) {
	fullSuiteOnly(t)
	for _, driver := range driverNames {
		t.Run(driver, func(t *testing.T) { testFailoverSync(t, driver) })
	}
}

func testFailoverSync(t *testing.T, driver string) {
	t.Helper()
	pair := newFailoverPair(t, true)
	db := openFailoverDB(t, driver, pair)
	holder, table := newClientTable(t, db, failoverLease...)
	rival := sameTable(t, db, table, failoverLease...)
	waiter := sameTable(t, db, table, failoverLease...)
	closeClients(t, holder, rival, waiter)

	names := lockNames("held", 20)
	locks := acquireAll(t, holder, names)
	handoff, err := holder.AcquireContext(testCtx(t), "handoff")
	require.NoError(t, err)
	waited := acquireRetrying(testCtx(t), waiter, "handoff")
	waitFor(t, 10*time.Second, "waiter listening", func() bool { return waiter.Stats().Listening })
	listens := waiter.Stats().ListenerConnects
	rv := startRivals(t, rival, names)
	acq := startAcquirer(t, holder, "late", 0)
	time.Sleep(500 * time.Millisecond) // acquisitions right up to the kill

	killed, _ := pair.failover(t, time.Second)
	atPromotion := rvnsOf(append(acq.locks(), locks...))
	relisten := waitFor(t, 10*time.Second, "waiter listening on the new primary", func() bool {
		s := waiter.Stats()
		return s.Listening && s.ListenerConnects > listens
	}, func() string {
		return fmt.Sprintf("waiter's acquire returned: %v; %d listener connections before the kill; waiter %+v",
			len(waited) > 0, listens, waiter.Stats())
	})
	t.Logf("listener back %v after the promotion", relisten.Round(time.Millisecond))
	// The waiter from before the failover gets its lock, whether its wait
	// outlived the failover or it asked again after it.
	require.NoError(t, holder.Release(handoff))
	res := <-waited
	require.NoError(t, res.err)
	require.NoError(t, waiter.Release(res.l))
	checkHandoff(t, holder, waiter)
	late := acq.stop()

	// Hold on until a lease after the kill has passed: a lock that had
	// lost its heartbeats for good would be lost by then.
	time.Sleep(time.Until(killed.Add(6*time.Second + time.Second)))
	require.Empty(t, rv.stop(), "rivals took held names")
	for _, l := range locks {
		checkRowHeld(t, db, table, l, atPromotion[l])
	}
	var before int
	for _, a := range late {
		if a.at.Before(killed) {
			before++
		}
		checkRowHeld(t, db, table, a.l, atPromotion[a.l]) // 0 for those acquired since
	}
	s := holder.Stats()
	t.Logf("%s: %d locks held across the failover, %d acquired before it and %d after, all kept; lost %d, heartbeat failures %d",
		driver, len(locks), before, len(late)-before, s.Lost, s.HeartbeatFailures)
	require.Zero(t, s.Lost)
	require.NotZero(t, before, "no acquisition before the kill")
}

// checkRowHeld checks that l is held, and that its row on the new primary
// has l's owner and an RVN at least l's, which a heartbeat moved past since.
// The row may be ahead of l: a heartbeat of a batch writes the row before
// its answer reaches the lock.
func checkRowHeld(t *testing.T, db *sql.DB, table string, l *pglock.Lock, since int64) {
	t.Helper()
	require.False(t, isClosed(l.Done()), "lock %s lost: %v", l.Name(), l.Err())
	known := l.RecordVersionNumber()
	owner, rvn, ok := rowOf(t, db, table, l.Name())
	require.True(t, ok, "no row for %s on the new primary", l.Name())
	require.Equal(t, l.Owner(), owner, l.Name())
	require.GreaterOrEqual(t, rvn, known, "%s: row behind the lock", l.Name())
	require.Greater(t, rvn, since, "%s: no heartbeat since the promotion", l.Name())
}

// rvnsOf returns the RVN of every lock of locks.
func rvnsOf(locks []*pglock.Lock) map[*pglock.Lock]int64 {
	m := make(map[*pglock.Lock]int64, len(locks))
	for _, l := range locks {
		m[l] = l.RecordVersionNumber()
	}
	return m
}

// checkHandoff makes the waiter wait for a lock the holder holds, releases
// it, and checks that the waiter holds it within a second and that the
// release's notification reached it from the new primary.
func checkHandoff(t *testing.T, holder, waiter *pglock.Client) {
	t.Helper()
	ctx := testCtx(t)
	// A second wait keeps the waiter's listener up through the handoff. The
	// listener of a single wait stops once its waiter holds the lock, and
	// the waiter may take it by a poll (a new session wakes every waiter to
	// look once): the session may then close before it reads the release's
	// notification.
	kept, err := holder.AcquireContext(ctx, "handoff-listener")
	require.NoError(t, err)
	defer func() { require.NoError(t, holder.Release(kept)) }()
	keepCtx, stopKeeping := context.WithCancel(ctx)
	keeping := acquireAsync(keepCtx, waiter, "handoff-listener")
	defer func() {
		stopKeeping()
		if res := <-keeping; res.err == nil {
			t.Errorf("the waiter took %s while the holder held it", res.l.Name())
		}
	}()
	// The session may be the one of the waiter's previous wait: a client
	// that waits again soon after keeps it.
	waitFor(t, 10*time.Second, "the waiter listening", func() bool {
		return waiter.Stats().Listening
	}, func() string {
		return fmt.Sprintf("the wait returned: %v; waiter %+v", len(keeping) > 0, waiter.Stats())
	})

	l, err := holder.AcquireContext(ctx, "handoff-after")
	require.NoError(t, err)
	waits := waiter.Stats().Waits
	waited := acquireAsync(ctx, waiter, "handoff-after")
	waitFor(t, 10*time.Second, "the waiter waiting", func() bool {
		stillWaiting(t, waited)
		return waiter.Stats().Waits > waits
	})
	before := waiter.Stats()
	start := time.Now()
	require.NoError(t, holder.Release(l))
	released := time.Now()
	res := <-waited
	require.NoError(t, res.err)
	defer func() { require.NoError(t, waiter.Release(res.l)) }()
	after := waiter.Stats()
	t.Logf("handoff after the failover: %v from Release's start to the waiter holding the lock (%v from Release's return); waiter's own measure %v",
		res.at.Sub(start).Round(time.Microsecond), res.at.Sub(released).Round(time.Microsecond), after.MaxHandoff.Round(time.Microsecond))
	require.Less(t, res.at.Sub(start), time.Second)
	// The release's notification reaches the waiter from the new primary.
	// Under load the waiter's poll may still pick the lock up first, so the
	// proof is the notification, not which of the two woke the waiter.
	require.Eventually(t, func() bool { return waiter.Stats().Notifications > before.Notifications }, 10*time.Second, time.Millisecond,
		"no release notification reached the waiter")
}

// stillWaiting fails t if the wait whose result comes on got has returned.
func stillWaiting(t *testing.T, got <-chan acquireResult) {
	t.Helper()
	select {
	case res := <-got:
		t.Fatalf("the waiter did not wait for a held lock: %v", res.err)
	default:
	}
}
