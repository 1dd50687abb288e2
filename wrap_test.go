package pglock_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestSequenceWrap: the RVN sequence CYCLEs from its maximum back to 1, and
// locks keep working across the wrap.
func TestSequenceWrap(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	other := sameTable(t, db, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	seq := quote(table + "_rvn")
	mustExec(t, db, `ALTER SEQUENCE `+seq+` RESTART WITH 9223372036854775806`)

	l, err := c.Acquire("a")
	require.NoError(t, err)
	assert.Equal(t, int64(math.MaxInt64-1), l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l))
	assert.Equal(t, int64(math.MaxInt64), l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l), "the heartbeat that wraps")
	assert.Equal(t, int64(1), l.RecordVersionNumber(), "wrapped to MINVALUE")
	rvn, _ := rowRVN(t, db, table, "a")
	assert.Equal(t, int64(1), rvn)

	_, err = other.Acquire("a", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired, "still held after the wrap")
	l2, err := other.Acquire("b")
	require.NoError(t, err)
	assert.Less(t, l2.RecordVersionNumber(), int64(100), "fresh numbers after the wrap")
	require.NoError(t, l.Close())
	require.NoError(t, l2.Close())

	// Acquire at the very top, then the background heartbeat across the
	// wrap.
	mustExec(t, db, `ALTER SEQUENCE `+seq+` RESTART WITH 9223372036854775807`)
	hb, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	require.NoError(t, err)
	l, err = hb.Acquire("c")
	require.NoError(t, err)
	assert.Equal(t, int64(math.MaxInt64), l.RecordVersionNumber())
	require.Eventually(t, func() bool {
		r := l.RecordVersionNumber()
		return l.IsReleased() || (r > 0 && r < 1000)
	}, waitBound, 10*time.Millisecond)
	require.False(t, l.IsReleased(), "the lock survives the wrap")
	rvn, _ = rowRVN(t, db, table, "c")
	assert.Less(t, rvn, int64(1000))
	_, err = other.Acquire("c", pglock.FailIfLocked())
	assert.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NoError(t, l.Close())
	l, err = other.Acquire("c", pglock.FailIfLocked())
	require.NoError(t, err)
	require.NoError(t, l.Close())
}
