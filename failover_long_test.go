package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestFailoverLongerThanLease fails over in more than a lease: every holder
// counts its locks lost within the lease, calls made meanwhile return within
// their contexts, and once the new primary is up the client acquires again,
// fresh names at once and the lost locks' names after a lease. The
// package's TestMain fails the run if goroutines outlive the tests.
func TestFailoverLongerThanLease(t *testing.T) {
	fullSuiteOnly(t)
	const lease = 3 * time.Second
	pair := newFailoverPair(t, true)
	db := openFailoverDB(t, "postgres", pair)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	closeClients(t, c)
	names := lockNames("held", 10)
	locks := acquireAll(t, c, names)
	extra := acquireAll(t, c, []string{"released-during-outage"})[0]
	time.Sleep(300 * time.Millisecond) // heartbeats running

	require.NoError(t, pair.primary.Kill())
	killed := time.Now()
	callsWithin(t, c, locks[0], extra)
	lost := lossTimes(t, locks, killed, 2*lease)
	time.Sleep(time.Until(killed.Add(lease + 1500*time.Millisecond)))
	require.NoError(t, pair.standby.Promote())
	promoted := time.Now()

	first, last := lost[0], lost[0]
	for _, d := range lost {
		first, last = min(first, d), max(last, d)
	}
	s := c.Stats()
	t.Logf("failover of %v with a %v lease: %d locks counted lost %v to %v after the kill (Stats.Lost %d, heartbeat failures %d)",
		promoted.Sub(killed).Round(time.Millisecond), lease, len(locks), first.Round(time.Millisecond), last.Round(time.Millisecond), s.Lost, s.HeartbeatFailures)
	// The lock released during the outage is not counted lost, whether
	// its release was sent or not.
	require.Contains(t, []int64{int64(len(locks)), int64(len(locks)) + 1}, s.Lost)
	// Heartbeats succeeded until the kill: no lock is counted lost much
	// before a lease ran out, nor after it.
	require.Greater(t, first, lease/2)
	require.LessOrEqual(t, last, lease)
	acquireAfterFailover(t, c, names[0], promoted)
}

// lossTimes waits until every lock of locks is lost, and returns for each
// how long after since its Done closed, failing t after limit.
func lossTimes(t *testing.T, locks []*pglock.Lock, since time.Time, limit time.Duration) []time.Duration {
	t.Helper()
	lost := make([]time.Duration, len(locks))
	for i, l := range locks {
		select {
		case <-l.Done():
		case <-time.After(time.Until(since.Add(limit))):
			t.Fatalf("lock %s not counted lost %v after the kill", l.Name(), limit)
		}
		lost[i] = time.Since(since)
	}
	// Done closed at most a poll earlier than seen for all but the first:
	// precise enough for bounds of a fraction of a lease.
	return lost
}

// callsWithin checks that calls made while no server accepts writes
// return an error within their context, with a margin for a loaded
// machine.
func callsWithin(t *testing.T, c *pglock.Client, held, release *pglock.Lock) {
	t.Helper()
	const bound = 500 * time.Millisecond
	calls := map[string]func(ctx context.Context) error{
		"AcquireContext": func(ctx context.Context) error {
			_, err := c.AcquireContext(ctx, "fresh-during-outage")
			return err
		},
		"AcquireContext held": func(ctx context.Context) error {
			_, err := c.AcquireContext(ctx, held.Name())
			return err
		},
		"SendHeartbeat":  func(ctx context.Context) error { return c.SendHeartbeat(ctx, held) },
		"ReleaseContext": func(ctx context.Context) error { return c.ReleaseContext(ctx, release) },
		"GetContext": func(ctx context.Context) error {
			_, err := c.GetContext(ctx, held.Name())
			return err
		},
		"GetAllLocksContext": func(ctx context.Context) error {
			_, err := c.GetAllLocksContext(ctx)
			return err
		},
		"Do": func(ctx context.Context) error {
			return c.Do(ctx, "do-during-outage", func(context.Context, *pglock.Lock) error { return nil })
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		t.Logf("%s during the outage: %q after %v", name, firstLine(fmt.Sprint(err)), took.Round(time.Millisecond))
		require.Error(t, err, name)
		require.Less(t, took, bound+time.Second, name)
	}
}

// acquireAfterFailover checks that c acquires a fresh name at once after
// the promotion, and the name of a lost lock, whose row was left behind,
// once its RVN stayed unchanged for a lease.
func acquireAfterFailover(t *testing.T, c *pglock.Client, lostName string, promoted time.Time) {
	t.Helper()
	var fresh *pglock.Lock
	for fresh == nil {
		l, err := c.AcquireContext(testCtx(t), "fresh-after-failover")
		var unavailable *pglock.UnavailableError
		require.True(t, err == nil || errors.As(err, &unavailable), "%v", err)
		fresh = l
		require.Less(t, time.Since(promoted), 10*time.Second, "no acquisition after the promotion")
	}
	t.Logf("fresh name acquired %v after the promotion", time.Since(promoted).Round(time.Millisecond))
	start := time.Now()
	stale, err := c.AcquireContext(testCtx(t), lostName)
	require.NoError(t, err)
	t.Logf("lost lock's name taken over after %v", time.Since(start).Round(time.Millisecond))
	require.NotZero(t, c.Stats().Steals)
	require.NoError(t, c.Release(fresh))
	require.NoError(t, c.Release(stale))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx), "Close after the failover")
	require.Zero(t, c.Stats().StuckStatements)
}
