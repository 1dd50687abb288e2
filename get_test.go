package pglock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreGet(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("holder"), pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	reader := sameTable(t, db, table, pglock.WithOwner("reader"))

	for _, get := range []func() error{
		func() error { _, err := reader.Get("absent"); return err },
		func() error { _, err := reader.GetContext(bg, "absent"); return err },
		func() error { _, err := reader.GetData("absent"); return err },
		func() error { _, err := reader.GetDataContext(bg, "absent"); return err },
	} {
		err := get()
		require.ErrorIs(t, err, pglock.ErrLockNotFound)
		var notExist *pglock.NotExistError
		require.ErrorAs(t, err, &notExist)
	}

	l, err := c.Acquire("job", pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	got, err := reader.Get("job")
	require.NoError(t, err)
	assert.Equal(t, "holder", got.Owner())
	assert.Equal(t, "payload", string(got.Data()))
	assert.Equal(t, l.RecordVersionNumber(), got.RecordVersionNumber())
	assert.True(t, got.IsReleased(), "a lock read with Get is not held by the reader")
	assert.ErrorIs(t, got.Close(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, reader.Release(got), pglock.ErrLockAlreadyReleased)
	assert.False(t, l.IsReleased(), "the holder still holds it")
	_, err = reader.Acquire("job", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)

	got, err = reader.GetContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "holder", got.Owner())
	data, err := reader.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))

	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = reader.GetContext(ctx, "job")
	assert.Error(t, err, "an ended ctx reads nothing")
	_, err = reader.GetDataContext(ctx, "job")
	assert.Error(t, err)
	require.NoError(t, l.Close())
}

func TestCoreGetAllLocks(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithOwner("holder"), pglock.WithHeartbeatFrequency(0))
	reader := sameTable(t, db, table, pglock.WithOwner("reader"))

	all, err := reader.GetAllLocks()
	require.NoError(t, err)
	assert.Empty(t, all)

	held, err := c.Acquire("b-held", pglock.WithData([]byte("B")))
	require.NoError(t, err)
	kept, err := c.Acquire("a-kept", pglock.WithData([]byte("A")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, kept.Close())
	other, err := reader.Acquire("c-other")
	require.NoError(t, err)

	for _, get := range []func() ([]*pglock.ReadOnlyLock, error){
		reader.GetAllLocks,
		func() ([]*pglock.ReadOnlyLock, error) { return reader.GetAllLocksContext(bg) },
	} {
		all, err := get()
		require.NoError(t, err)
		require.Len(t, all, 3, "held and kept rows alike")
		var names, owners, data []string
		for _, l := range all {
			names = append(names, l.Name())
			owners = append(owners, l.Owner())
			data = append(data, string(l.Data()))
		}
		assert.Equal(t, []string{"a-kept", "b-held", "c-other"}, names)
		assert.Equal(t, []string{"holder", "holder", "reader"}, owners)
		assert.Equal(t, []string{"A", "B", ""}, data)
		assert.Zero(t, all[0].RecordVersionNumber(), "kept row: NULL RVN")
		assert.Equal(t, held.RecordVersionNumber(), all[1].RecordVersionNumber())
	}

	ctx, cancel := context.WithCancel(bg)
	cancel()
	_, err = reader.GetAllLocksContext(ctx)
	assert.Error(t, err)
	require.NoError(t, held.Close())
	require.NoError(t, other.Close())
}
