package pglock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestSmoke(t *testing.T) {
	db := openDB(t)
	c := newClient(t, db, pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(200*time.Millisecond))
	l, err := c.Acquire("a", pglock.WithData([]byte("hello")))
	require.NoError(t, err)
	require.False(t, l.IsReleased())
	rvn := l.RecordVersionNumber()
	time.Sleep(500 * time.Millisecond)
	require.NotEqual(t, rvn, l.RecordVersionNumber())
	_, err = c.Acquire("a", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	got := make(chan time.Time)
	go func() {
		l2, err := c.Acquire("a")
		if err == nil {
			got <- time.Now()
			_ = l2.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	rel := time.Now()
	require.NoError(t, l.Close())
	at := <-got
	t.Logf("handoff %v", at.Sub(rel))
	require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}
