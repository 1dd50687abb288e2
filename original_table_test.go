package pglock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestCoreOriginalTable: a table and sequence made by the original library's
// DDL, verbatim, work with every operation, including rows the original's
// clients left behind.
func TestCoreOriginalTable(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	table := originalTable(t, db)
	const lease = time.Second
	opts := []pglock.ClientOption{pglock.WithCustomTable(table), pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100 * time.Millisecond)}
	c, err := pglock.New(db, append(opts, pglock.WithOwner("new-client"))...)
	require.NoError(t, err)
	other, err := pglock.New(db, opts...)
	require.NoError(t, err)
	silent, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err)

	require.NoError(t, c.TryCreateTable(), "TryCreateTable leaves the original's table alone")
	require.Error(t, c.CreateTable(), "CreateTable refuses the existing table")

	// Acquire, heartbeat, read, contend, release.
	l, err := c.Acquire("job", pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	rvn := l.RecordVersionNumber()
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Eventually(t, func() bool { return l.RecordVersionNumber() > rvn+1 }, waitBound, 10*time.Millisecond, "background heartbeat")
	got, err := other.Get("job")
	require.NoError(t, err)
	assert.Equal(t, "new-client", got.Owner())
	got, err = other.GetContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(got.Data()))
	data, err := other.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))
	data, err = other.GetDataContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))
	_, err = other.Acquire("job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx))
	require.NoError(t, tx.Rollback())

	waited := make(chan *pglock.Lock, 1)
	go func() {
		l, err := other.AcquireContext(testCtx(t), "job")
		assert.NoError(t, err)
		waited <- l
	}()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, c.Release(l))
	l2 := <-waited
	require.NotNil(t, l2)
	require.NoError(t, other.ReleaseContext(bg, l2))
	_, err = c.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)

	// KeepOnRelease, ReplaceData, GetAllLocks, Do.
	l, err = c.Acquire("kept", pglock.WithData([]byte("one")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, err = other.Acquire("kept", pglock.FailIfLocked(), pglock.WithData([]byte("two")), pglock.ReplaceData())
	require.NoError(t, err)
	assert.Equal(t, "two", string(l.Data()))
	require.NoError(t, l.Close())
	err = c.Do(bg, "do", func(ctx context.Context, l *pglock.Lock) error {
		all, err := other.GetAllLocks()
		require.NoError(t, err)
		require.Len(t, all, 1, "the kept row went with the plain release; only Do's lock")
		assert.Equal(t, "do", all[0].Name())
		all, err = other.GetAllLocksContext(ctx)
		require.NoError(t, err)
		assert.Len(t, all, 1)
		return nil
	})
	require.NoError(t, err)

	// Rows written by original clients: held, kept, and abandoned.
	mustExec(t, db, `INSERT INTO `+table+` VALUES ('orig-kept', NULL, 'old data', 'pglock-1')`)
	mustExec(t, db, `INSERT INTO `+table+` VALUES ('orig-crashed', nextval('`+table+`_rvn'), NULL, 'pglock-2')`)
	all, err := c.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, "pglock-2", all[0].Owner())
	l, err = c.Acquire("orig-kept", pglock.FailIfLocked())
	require.NoError(t, err, "a row the original kept is free at once")
	assert.Equal(t, "old data", string(l.Data()))
	require.NoError(t, l.Close())
	start := time.Now()
	l, err = silent.AcquireContext(testCtx(t), "orig-crashed")
	require.NoError(t, err, "an abandoned row is taken over after a lease")
	assert.GreaterOrEqual(t, time.Since(start), lease)
	<-l.Done() // no heartbeat: lost a lease later
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.NoError(t, silent.Release(l), "nobody took it over: the row is cleaned up")

	// SendHeartbeat and Release of a lock lost on this table.
	l, err = silent.Acquire("lost")
	require.NoError(t, err)
	stealRow(t, db, table, "lost")
	require.ErrorIs(t, silent.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, silent.Release(l), pglock.ErrLockAlreadyReleased)

	require.NoError(t, c.DropTable())
	assert.False(t, tableExists(t, db, "", table, "r"))
	assert.False(t, tableExists(t, db, "", table+"_rvn", "S"))
}
