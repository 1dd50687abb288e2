package pglock_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestRememberedRVNForgottenAfterLease: a client saw RVN r on a name, then
// looked away. The table is dropped and created again, its sequence
// restarts, and a live holder gets r again. A sighting that was not
// confirmed within a lease is forgotten: FailIfLocked must not take the
// live lock over.
func TestRememberedRVNForgottenAfterLease(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	// Long enough that h2's acquire never waits half a lease, which would
	// renew the lock (and draw another RVN) before returning it.
	const lease = time.Second
	db := openDB(t)
	h1, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	w := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	l1, err := h1.Acquire("n")
	require.NoError(t, err)
	seen, err := w.Acquire("n", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)

	require.NoError(t, h1.DropTable())
	require.NoError(t, h1.CreateTable())
	// The new sequence hands out r next, as a restarted sequence would once
	// it got there (here without depending on how many values the first
	// table drew).
	mustExec(t, db, `SELECT setval($1::regclass, $2, false)`, quote(table+"_rvn"), l1.RecordVersionNumber())
	time.Sleep(3 * lease) // longer than a sighting is remembered unconfirmed
	h2 := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	l2, err := h2.Acquire("n")
	require.NoError(t, err)
	require.Equal(t, l1.RecordVersionNumber(), l2.RecordVersionNumber(), "the restarted sequence gave the live holder the old RVN")
	_ = seen

	l3, err := w.Acquire("n", pglock.FailIfLocked())
	if err == nil {
		t.Errorf("a sighting %v old, never confirmed, took over a live lock", 3*lease)
		_ = w.Release(l3)
	}
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NoError(t, h2.Release(l2))
}

// TestWatchedNamesBeyondCapacity: a FailIfLocked sweep over more names than
// a client remembers still takes dead locks over, within a few leases.
func TestWatchedNamesBeyondCapacity(t *testing.T) { //nolint:paralleltest // shrinks a package limit
	defer pglock.SetMaxWatched(4)()
	const lease, names = 300 * time.Millisecond, 6
	db := openDB(t)
	dead, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	for i := range names {
		_, err := dead.Acquire(fmt.Sprint("n", i)) // held by nobody alive from now on
		require.NoError(t, err)
	}
	sweeper := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	taken := map[string]bool{}
	deadline := time.Now().Add(20 * lease)
	for len(taken) < names && time.Now().Before(deadline) {
		for i := range names {
			name := fmt.Sprint("n", i)
			if taken[name] {
				continue
			}
			if l, err := sweeper.Acquire(name, pglock.FailIfLocked()); err == nil {
				taken[name] = true
				require.NoError(t, sweeper.Release(l))
			}
		}
		time.Sleep(lease / 10)
	}
	assert.Len(t, taken, names, "every dead lock taken over within 20 leases")
}

// TestFailIfLockedTakesWatchedStaleLock: FailIfLocked takes a lock whose
// RVN this client has already seen unchanged for a whole lease, and only
// then.
func TestFailIfLockedTakesWatchedStaleLock(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = 3 * time.Second
	table, db := newTable(t)
	holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	watcher := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	stranger := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	l, err := holder.Acquire("flk")
	require.NoError(t, err)
	_, err = watcher.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)

	// A heartbeat restarts the watch: a lease after the first sighting the
	// RVN is new, so the watcher must not take it.
	time.Sleep(lease / 2)
	require.NoError(t, holder.SendHeartbeat(bg, l))
	time.Sleep(lease / 2)
	_, err = watcher.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "the RVN changed within the lease")

	time.Sleep(lease + lease/5)
	_, err = stranger.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "a client that never watched it must not take it")
	taken, err := watcher.Acquire("flk", pglock.FailIfLocked())
	require.NoError(t, err, "watched unchanged for a lease")
	require.EqualValues(t, 1, watcher.Stats().Steals)
	<-l.Done()
	// taken has no heartbeat: on a machine stalled for a lease it lapses
	// before this release, which then says so.
	if err := watcher.Release(taken); err != nil {
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
	}
}
