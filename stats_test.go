package pglock_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestStatsCounts walks two clients through a handoff, heartbeats, a failed
// heartbeat and a loss, and checks each counter.
func TestStatsCounts(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(6 * time.Second), pglock.WithHeartbeatFrequency(500 * time.Millisecond)}
	c1, table := newClientTable(t, db, opts...)
	c2 := sameTable(t, db, table, opts...)
	require.Equal(t, pglock.Stats{}, c1.Stats(), "a new client has done nothing")

	l1, err := c1.Acquire("a")
	require.NoError(t, err)
	require.Equal(t, int64(1), c1.Stats().Acquired)
	require.Equal(t, int64(1), c1.Stats().Held())

	got := make(chan *pglock.Lock, 1)
	go func() {
		l2, err := c2.Acquire("a")
		if err != nil {
			t.Error(err)
		}
		got <- l2
	}()
	require.Eventually(t, func() bool { s := c2.Stats(); return s.Waits == 1 && s.Listening }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, l1.Close())
	l2 := <-got
	require.NotNil(t, l2)
	s1 := c1.Stats()
	require.Equal(t, int64(1), s1.Released)
	require.Zero(t, s1.Held())
	require.Zero(t, s1.Waits)
	s2 := c2.Stats()
	require.Equal(t, int64(1), s2.Acquired)
	require.Equal(t, int64(1), s2.Waits)
	require.Positive(t, s2.WaitTime)
	require.Equal(t, s2.WaitTime, s2.MaxWait, "one wait: the total is the longest")
	require.Equal(t, int64(1), s2.ListenerConnects)
	require.LessOrEqual(t, s2.Handoffs, int64(1))
	require.LessOrEqual(t, s2.HandoffTime, s2.WaitTime)
	require.Zero(t, s2.Steals)
	require.Eventually(t, func() bool { return c2.Stats().Notifications >= 1 || !c2.Stats().Listening }, 10*time.Second, 5*time.Millisecond)

	// Background heartbeats count one per refreshed lock.
	require.Eventually(t, func() bool { return c2.Stats().Heartbeats >= 1 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, c2.Stats().HeartbeatFailures)

	// A Guard transaction holds the row: a SendHeartbeat that cannot get it
	// in time fails, and the lock is still held.
	tx, err := db.BeginTx(bg, nil)
	require.NoError(t, err)
	require.NoError(t, l2.Guard(bg, tx))
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	require.Error(t, c2.SendHeartbeat(ctx, l2))
	cancel()
	require.NoError(t, tx.Rollback())
	require.GreaterOrEqual(t, c2.Stats().HeartbeatFailures, int64(1))
	require.False(t, l2.IsReleased())
	require.Equal(t, int64(1), c2.Stats().Held())

	// A thief takes the row: the next heartbeat finds it lost.
	stealRow(t, db, table, "a")
	<-l2.Done()
	s2 = c2.Stats()
	require.Equal(t, int64(1), s2.Lost)
	require.Zero(t, s2.Held())
	require.ErrorIs(t, l2.Close(), pglock.ErrLockAlreadyReleased)
	require.Zero(t, c2.Stats().Released, "a lost lock is not counted released")
}

// TestStatsCountersFillEveryField checks that each counter fills a Stats
// field of its own, with its value, and that every Stats field is filled by
// a counter except those Stats reads from elsewhere.
func TestStatsCountersFillEveryField(t *testing.T) {
	t.Parallel()
	elsewhere := map[string]bool{"Listening": true, "AbandonedStatements": true, "StuckStatements": true}
	typ := reflect.TypeFor[pglock.Stats]()
	filledBy := make(map[string]int)
	for k, s := range pglock.CounterSnapshots() {
		v := reflect.ValueOf(s)
		var set []string
		for i := range typ.NumField() {
			if !v.Field(i).IsZero() {
				set = append(set, typ.Field(i).Name)
			}
		}
		if len(set) != 1 {
			t.Errorf("counter %d sets %v, want one field", k, set)
			continue
		}
		if got := v.FieldByName(set[0]).Int(); got != int64(k)+1 {
			t.Errorf("counter %d set to %d reads %d in Stats.%s", k, k+1, got, set[0])
		}
		if prev, ok := filledBy[set[0]]; ok {
			t.Errorf("counters %d and %d both fill Stats.%s", prev, k, set[0])
		}
		filledBy[set[0]] = k
	}
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if _, filled := filledBy[name]; filled == elsewhere[name] {
			t.Errorf("Stats.%s: filled by a counter %v, read elsewhere %v; want exactly one", name, filled, elsewhere[name])
		}
	}
}
