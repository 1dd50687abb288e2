package pglock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestDoneClosedOnRelease(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	l, err := c.Acquire("done-release")
	require.NoError(t, err)
	require.False(t, isClosed(l.Done()), "Done closed while held")
	require.NoError(t, l.Err())
	require.NoError(t, c.Release(l))
	require.True(t, isClosed(l.Done()), "Done not closed by Release")
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.True(t, l.IsReleased())
}

// TestDoneClosedSoonAfterTakeover: once the row is taken over, the next
// heartbeat notices and Done closes about one heartbeat interval later, long
// before the lease would run out.
func TestDoneClosedSoonAfterTakeover(t *testing.T) {
	t.Parallel()
	const lease, freq = 20 * time.Second, 200 * time.Millisecond
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := c.Acquire("done-steal")
	require.NoError(t, err)
	stealRow(t, db, table, "done-steal")
	took := waitClosed(t, l.Done(), lease/2, "Done after a steal")
	t.Logf("Done closed %v after the steal (heartbeat every %v)", took, freq)
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
	require.Equal(t, int64(1), c.Stats().Lost)
}

// TestDoneClosedALeaseAfterHeartbeatsStop: a lock whose heartbeats stop is
// lost a lease after the last one began, not before.
func TestDoneClosedALeaseAfterHeartbeatsStop(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease, freq = 2 * time.Second, 200 * time.Millisecond
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	hbCtx, stopHeartbeat := context.WithCancel(bg)
	l, err := c.Acquire("done-silence", pglock.WithCustomHeartbeatContext(hbCtx))
	require.NoError(t, err)
	stopHeartbeat()
	stopped := time.Now()
	waitClosed(t, l.Done(), 30*lease, "Done after heartbeats stopped")
	took := time.Since(stopped)
	t.Logf("Done closed %v after heartbeats stopped (lease %v)", took, lease)
	// The last heartbeat began about one interval before the stop, or
	// somewhat more on a loaded machine: the loss cannot come much sooner.
	require.Greater(t, took, lease/2, "lost long before a lease of silence")
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.NoError(t, c.Release(l), "nobody took the row: Release still deletes it")
}

// TestDoneNotClosedWhileHeld: a lock held through many heartbeats
// and several leases stays held.
func TestDoneNotClosedWhileHeld(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease, freq = 2 * time.Second, 200 * time.Millisecond
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := c.Acquire("done-held")
	require.NoError(t, err)
	first := l.RecordVersionNumber()
	select {
	case <-l.Done():
		t.Fatalf("Done closed while held: %v", l.Err())
	case <-time.After(2 * lease):
	}
	require.NoError(t, l.Err())
	require.NotEqual(t, first, l.RecordVersionNumber(), "no heartbeat landed")
	require.GreaterOrEqual(t, c.Stats().Heartbeats, int64(5))
	require.NoError(t, c.Release(l))
}
