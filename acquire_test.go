package pglock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreAcquireRelease(t *testing.T) {
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

func TestCoreAcquireContext(t *testing.T) {
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
	go func() {
		l, err := c.AcquireContext(ctx2, "job")
		res <- result{l, err}
	}()
	time.Sleep(100 * time.Millisecond)
	cancel2()
	r2 := <-res
	assert.Nil(t, r2.l)
	assert.ErrorIs(t, r2.err, pglock.ErrNotAcquired)
	assert.ErrorIs(t, r2.err, context.Canceled)
	require.NoError(t, r.l.Close())
}

func TestCoreFailIfLocked(t *testing.T) {
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

func TestCoreLockData(t *testing.T) {
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

func TestCoreWithCustomHeartbeatContext(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	thief := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))

	t.Run("outlives the acquire ctx", func(t *testing.T) {
		actx, acancel := context.WithCancel(bg)
		l, err := c.AcquireContext(actx, "a", pglock.WithCustomHeartbeatContext(bg))
		require.NoError(t, err)
		acancel()
		rvn := l.RecordVersionNumber()
		time.Sleep(lease + lease/2)
		assert.False(t, l.IsReleased(), "the heartbeat runs under its own ctx")
		assert.NotEqual(t, rvn, l.RecordVersionNumber(), "and keeps bumping the RVN")
		_, err = thief.Acquire("a", pglock.FailIfLocked())
		assert.ErrorIs(t, err, pglock.ErrNotAcquired)
		require.NoError(t, l.Close())
	})

	t.Run("cancelling it stops the heartbeat", func(t *testing.T) {
		hctx, hcancel := context.WithCancel(bg)
		l, err := c.Acquire("b", pglock.WithCustomHeartbeatContext(hctx))
		require.NoError(t, err)
		hcancel()
		select {
		case <-l.Done():
		case <-time.After(waitBound):
			t.Fatal("lock not lost a lease after its heartbeat stopped")
		}
		assert.True(t, l.IsReleased())
		assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
		l2, err := thief.AcquireContext(testCtx(t), "b")
		require.NoError(t, err, "a waiter takes the silent lock over")
		assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased, "the old holder's release fails")
		require.NoError(t, l2.Close())
	})
}

func TestCoreLockStolenAfterHeartbeatStops(t *testing.T) {
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

func TestHeartbeatKeepsWaitersOff(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 2*lease)
	defer cancel()
	_, err = waiter.AcquireContext(ctx, "job")
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "a heartbeating lock is never taken over")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, l.IsReleased())
	require.NoError(t, l.Close())
}

// TestAcquireAfterLongRowWait: an acquire statement that waited long on the
// row's lock (many contenders queue on it) must not hand out a lock whose
// lease, counted from the statement's start, has already run out.
func TestAcquireAfterLongRowWait(t *testing.T) {
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

// TestFailIfLockedReportsHolder: the lock FailIfLocked returns with
// ErrNotAcquired carries the holder's owner and RVN, as in the original,
// and cannot be released.
func TestFailIfLockedReportsHolder(t *testing.T) {
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
