package pglock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestRollingUpgrade: clients of the original library (played with raw SQL
// of its algorithm, see origClient) and of this one share the
// original's table and never hold one name at once, whichever holds and
// whichever waits, and whichever goes silent.
func TestRollingUpgrade(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := originalTable(t, db)
	const (
		lease = 2 * time.Second
		freq  = 250 * time.Millisecond
	)
	ours, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	require.NoError(t, err)
	orig := &origClient{db: db, table: table, owner: "pglock-42", lease: lease}
	ctx := testCtx(t)

	// inside counts holders of the name, as each holder sees itself.
	var inside atomic.Int64
	enter := func(who string) {
		if n := inside.Add(1); n != 1 {
			t.Errorf("%s entered while %d others held the lock", who, n-1)
		}
	}
	leave := func() { inside.Add(-1) }

	t.Run("original holds, ours waits", func(t *testing.T) {
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		enter("original")
		got := make(chan *pglock.Lock, 1)
		go func() {
			l, err := ours.AcquireContext(ctx, "n")
			assert.NoError(t, err)
			enter("ours")
			got <- l
		}()
		hctx, stop := context.WithTimeout(ctx, lease+lease/2)
		rvn, held := orig.heartbeatEvery(hctx, "n", rvn, freq)
		stop()
		require.True(t, held, "the heartbeating original was not taken over")
		leave()
		ok, err := orig.release(ctx, "n", rvn, false)
		require.NoError(t, err)
		require.True(t, ok)
		l := <-got
		leave()
		require.NoError(t, l.Close())
	})

	t.Run("ours holds, original waits", func(t *testing.T) {
		l, err := ours.AcquireContext(ctx, "n")
		require.NoError(t, err)
		enter("ours")
		got := make(chan int64, 1)
		go func() {
			rvn, err := orig.acquire(ctx, "n")
			assert.NoError(t, err)
			enter("original")
			got <- rvn
		}()
		time.Sleep(lease + lease/2)
		require.False(t, l.IsReleased(), "our heartbeating lock was not taken over")
		leave()
		require.NoError(t, l.Close())
		rvn := <-got
		leave()
		ok, err := orig.release(ctx, "n", rvn, false)
		require.NoError(t, err)
		require.True(t, ok)
	})

	t.Run("original goes silent, ours takes over", func(t *testing.T) {
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		enter("original")
		leave() // it crashes: no heartbeat, no release
		start := time.Now()
		l, err := ours.AcquireContext(ctx, "n")
		require.NoError(t, err)
		enter("ours")
		assert.GreaterOrEqual(t, time.Since(start), lease)
		_, held, err := orig.heartbeat(ctx, "n", rvn)
		require.NoError(t, err)
		assert.False(t, held, "the original finds its lock lost")
		leave()
		require.NoError(t, l.Close())
	})

	t.Run("ours goes silent, original takes over", func(t *testing.T) {
		hctx, stopHeartbeat := context.WithCancel(ctx)
		l, err := ours.AcquireContext(ctx, "n", pglock.WithCustomHeartbeatContext(hctx))
		require.NoError(t, err)
		enter("ours")
		left := make(chan struct{})
		go func() {
			<-l.Done()
			leave()
			close(left)
		}()
		stopHeartbeat()
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		// Our lock ends a lease after its last heartbeat began, before
		// the original, which waited a lease after seeing that RVN, can
		// take it; allow for the timer's scheduling.
		select {
		case <-left:
		case <-time.After(200 * time.Millisecond):
			t.Error("the original took over a lock our client still held")
			<-left
		}
		enter("original")
		require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
		leave()
		ok, err := orig.release(ctx, "n", rvn, true)
		require.NoError(t, err)
		require.True(t, ok)
		l, err = ours.Acquire("n", pglock.FailIfLocked())
		require.NoError(t, err, "a row the original kept is free at once")
		require.NoError(t, l.Close())
	})
}
