package pglock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreSendHeartbeat(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	for range 3 {
		before := l.RecordVersionNumber()
		require.NoError(t, c.SendHeartbeat(bg, l))
		after := l.RecordVersionNumber()
		assert.NotEqual(t, before, after, "a heartbeat bumps the RVN")
		rvn, valid := testsRowRVN(t, db, testsQuote(table), "job")
		require.True(t, valid)
		assert.Equal(t, after, rvn, "the row carries the new RVN")
	}
	assert.False(t, l.IsReleased())

	testsStealRow(t, db, testsQuote(table), "job")
	err = c.SendHeartbeat(bg, l)
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "the RVN moved under the lock")
	assert.True(t, l.IsReleased(), "a failed heartbeat marks the lock released")
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed")
	}
	assert.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)

	// The row deleted under the lock is the same loss.
	l, err = c.Acquire("gone")
	require.NoError(t, err)
	testsExec(t, db, `DELETE FROM `+testsQuote(table)+` WHERE name = 'gone'`)
	require.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.True(t, l.IsReleased())
}

func TestCoreBackgroundHeartbeat(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	first := l.RecordVersionNumber()
	require.Eventually(t, func() bool {
		rvn, _ := testsRowRVN(t, db, testsQuote(table), "job")
		return rvn != first && rvn == l.RecordVersionNumber()
	}, testsBound, 20*time.Millisecond, "the heartbeat bumps the row's RVN and the lock follows")

	// A heartbeat that finds the row taken over ends the lock.
	testsStealRow(t, db, testsQuote(table), "job")
	select {
	case <-l.Done():
	case <-time.After(testsBound):
		t.Fatal("the background heartbeat did not notice the loss")
	}
	assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}
