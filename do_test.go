package pglock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreDo(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("doer"), pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	other := sameTable(t, db, table)

	ran := false
	err := c.Do(bg, "job", func(ctx context.Context, l *pglock.Lock) error {
		ran = true
		assert.False(t, l.IsReleased())
		assert.Equal(t, "payload", string(l.Data()))
		got, err := other.Get("job")
		require.NoError(t, err)
		assert.Equal(t, "doer", got.Owner(), "held while f runs")
		_, err = other.Acquire("job", pglock.FailIfLocked())
		assert.ErrorIs(t, err, pglock.ErrNotAcquired)
		return nil
	}, pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	require.True(t, ran)
	_, err = other.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "released after f")

	sentinel := errors.New("f failed")
	err = c.Do(bg, "job", func(context.Context, *pglock.Lock) error { return sentinel }, pglock.KeepOnRelease())
	require.ErrorIs(t, err, sentinel, "f's error is returned")
	kept, err := other.Get("job")
	require.NoError(t, err, "lock options apply: the row is kept")
	assert.Zero(t, kept.RecordVersionNumber())

	ctx, cancel := context.WithCancel(bg)
	cancel()
	err = c.Do(ctx, "job", func(context.Context, *pglock.Lock) error {
		t.Error("f ran without the lock")
		return nil
	})
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)

	assert.NotPanics(t, func() { assert.Error(t, c.Do(bg, "job", nil)) })
}

// TestCoreDoCancelsOnLoss: the ctx handed to f is cancelled when the lock is
// lost, however it is lost.
func TestCoreDoCancelsOnLoss(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	const lease = time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	thief := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))

	waitLoss := func(ctx context.Context, l *pglock.Lock) error {
		select {
		case <-ctx.Done():
		case <-time.After(waitBound):
			return errors.New("f's ctx was never cancelled")
		}
		assert.True(t, l.IsReleased(), "cancelled because the lock ended")
		return nil
	}

	t.Run("row taken over", func(t *testing.T) {
		err := c.Do(bg, "a", func(ctx context.Context, l *pglock.Lock) error {
			stealRow(t, db, table, "a")
			return waitLoss(ctx, l)
		})
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "f succeeded but the lock was lost")
	})

	t.Run("heartbeat stopped, lease passed, thief took it", func(t *testing.T) {
		hctx, hcancel := context.WithCancel(bg)
		taken := make(chan *pglock.Lock, 1)
		err := c.Do(bg, "b", func(ctx context.Context, l *pglock.Lock) error {
			hcancel()
			go func() {
				l2, err := thief.AcquireContext(testCtx(t), "b")
				assert.NoError(t, err)
				taken <- l2
			}()
			if err := waitLoss(ctx, l); err != nil {
				return err
			}
			// f goes on until the thief holds the lock.
			select {
			case l2 := <-taken:
				taken <- l2
			case <-time.After(waitBound):
				return errors.New("the thief never took the lock")
			}
			return nil
		}, pglock.WithCustomHeartbeatContext(hctx))
		require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
		l2 := <-taken
		require.NotNil(t, l2)
		require.NoError(t, l2.Close())
	})

	t.Run("f's error wins over the loss", func(t *testing.T) {
		sentinel := errors.New("stopped")
		err := c.Do(bg, "c", func(ctx context.Context, l *pglock.Lock) error {
			stealRow(t, db, table, "c")
			if err := waitLoss(ctx, l); err != nil {
				return err
			}
			return errors.Join(sentinel, ctx.Err())
		})
		require.ErrorIs(t, err, sentinel)
		require.ErrorIs(t, err, context.Canceled)
	})
}

// TestDoOutlastingLeaseWithHeartbeatsOff: with heartbeats off, an f that
// outlasts the lease sees its ctx cancelled when the lease lapses, but when
// nobody took the row over meanwhile the release proves nobody else held the
// lock, and Do returns f's nil, as the original did.
func TestDoOutlastingLeaseWithHeartbeatsOff(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	var lapsed bool
	err := c.Do(testCtx(t), "long-job", func(ctx context.Context, l *pglock.Lock) error {
		select {
		case <-ctx.Done():
			lapsed = true
		case <-time.After(waitBound):
		}
		time.Sleep(lease / 2) // f goes on past the lease
		return nil
	})
	require.NoError(t, err)
	assert.True(t, lapsed, "f's ctx is cancelled when the lease lapses")
	_, err = c.Get("long-job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "the row was released")
}

// TestDoOutlastingLeaseTakenOver: the same f, but another client takes the
// stale lock over while f runs: Do reports the loss.
func TestDoOutlastingLeaseTakenOver(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	err := c.Do(testCtx(t), "long-job", func(ctx context.Context, l *pglock.Lock) error {
		l2, err := other.AcquireContext(testCtx(t), "long-job")
		require.NoError(t, err, "the other client takes the stale lock over")
		require.NoError(t, l2.Close())
		return nil
	})
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
}
