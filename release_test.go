package pglock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"cirello.io/pglock"
)

func TestReleaseConcurrentSucceedsOnce(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	other := sameTable(t, db, table)
	for round := range 5 {
		l, err := c.Acquire("job")
		require.NoError(t, err)
		const n = 40
		errs := make(chan error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				switch i % 3 {
				case 0:
					errs <- l.Close()
				case 1:
					errs <- c.Release(l)
				default:
					errs <- other.ReleaseContext(bg, l) // through another client of the table
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			if err == nil {
				ok++
				continue
			}
			assert.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "round %d", round)
		}
		assert.Equal(t, 1, ok, "round %d: exactly one release succeeds", round)
		assert.True(t, l.IsReleased())
		_, err = c.Get("job")
		require.ErrorIs(t, err, pglock.ErrLockNotFound)
	}
}

func TestReleaseOfNilOrZeroLockFails(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c := newClient(t, db)
	assert.NotPanics(t, func() {
		assert.Error(t, c.Release(nil))
		assert.Error(t, c.ReleaseContext(bg, nil))
		assert.Error(t, c.SendHeartbeat(bg, nil))
		var l *pglock.Lock
		assert.Error(t, l.Close())
		assert.True(t, l.IsReleased())
		assert.Empty(t, l.Data())
		assert.Empty(t, l.Owner())
		assert.Zero(t, l.RecordVersionNumber())
		assert.Error(t, c.Release(&pglock.Lock{}), "a zero Lock is not held")
		assert.Error(t, (&pglock.Lock{}).Close())
	})
}

func TestReleaseOfLostLockLeavesNewHolderRow(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	// A long lease and no heartbeat: the lock cannot notice the loss by
	// itself, only Release finds out.
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	for _, keep := range []bool{false, true} {
		var opts []pglock.LockOption
		if keep {
			opts = append(opts, pglock.KeepOnRelease())
		}
		l, err := c.Acquire("job", opts...)
		require.NoError(t, err)
		stealRow(t, db, table, "job")
		assert.False(t, l.IsReleased(), "not noticed yet")
		err = c.Release(l)
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "keep=%v", keep)
		assert.True(t, l.IsReleased())
		assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
		got, err := c.Get("job")
		require.NoError(t, err)
		assert.Equal(t, "thief", got.Owner(), "the release left the new holder's row alone")
		mustExec(t, db, `DELETE FROM `+quote(table))
	}
}

func TestCallsOnReleasedLockFail(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	require.NoError(t, l.Close())

	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, c.ReleaseContext(bg, l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	tx, err := db.Begin()
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	assert.ErrorIs(t, l.Guard(bg, tx), pglock.ErrLockAlreadyReleased)
	assert.True(t, l.IsReleased())
	select {
	case <-l.Done():
	default:
		t.Fatal("Done is not closed on a released lock")
	}
}

// TestNoGoroutineOutlivesLock is not parallel: it counts goroutines.
func TestNoGoroutineOutlivesLock(t *testing.T) {
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	other := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	require.NoError(t, db.Ping())
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	// Held locks with heartbeats, a waiter with its listener, Do, and a
	// lock whose acquire ctx ended.
	var locks []*pglock.Lock
	for _, name := range []string{"a", "b", "c"} {
		l, err := c.Acquire(name, pglock.KeepOnRelease())
		require.NoError(t, err)
		locks = append(locks, l)
	}
	got := make(chan *pglock.Lock)
	go func() {
		l, err := other.AcquireContext(testCtx(t), "a")
		assert.NoError(t, err)
		got <- l
	}()
	time.Sleep(200 * time.Millisecond) // let the waiter start listening
	for _, l := range locks {
		require.NoError(t, l.Close())
	}
	require.NoError(t, (<-got).Close())
	require.NoError(t, other.Do(bg, "d", func(ctx context.Context, l *pglock.Lock) error { return nil }))
	ctx, cancel := context.WithCancel(bg)
	l, err := c.AcquireContext(ctx, "e")
	require.NoError(t, err)
	cancel()
	require.NoError(t, l.Close())
	lost, err := c.Acquire("f")
	require.NoError(t, err)
	stealRow(t, db, table, "f")
	<-lost.Done()
	require.ErrorIs(t, lost.Close(), pglock.ErrLockAlreadyReleased)
}

// TestReleaseAfterLapseCleansRowCountedOnce: a lock whose lease ran out
// without a heartbeat is lost (Done closed). Release still cleans its row up
// when nobody took it over, but reports the loss, so Do does not claim f ran
// under the lock. The lock is counted once: lost when it lapsed, not
// released too, and Held stays consistent.
func TestReleaseAfterLapseCleansRowCountedOnce(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(300*time.Millisecond), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	select {
	case <-l.Done():
	case <-time.After(waitBound):
		t.Fatal("lease never ran out")
	}
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased, "the holder was told it lost the lock")
	// As in the original, Release succeeds while the row still carries the
	// lock's RVN: nobody took it over, and the stale row is cleaned up.
	require.NoError(t, c.Release(l), "nobody took the row: the release succeeds, as documented")
	s := c.Stats()
	t.Logf("acquired %d released %d lost %d held %d", s.Acquired, s.Released, s.Lost, s.Held())
	assert.EqualValues(t, 0, s.Held())
	assert.EqualValues(t, 1, s.Lost)
	_, err = c.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "the stale row was cleaned up")
	require.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
}
