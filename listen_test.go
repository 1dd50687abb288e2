package pglock_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// TestReleaseWakesWaiterOfAnotherClient: with a one-minute lease, a waiter
// blocked in Acquire gets the lock soon after the release, well within a ctx
// deadline of a few seconds: through LISTEN when the *sql.DB has a
// connection string, by polling when it was made from a connector.
func TestReleaseWakesWaiterOfAnotherClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		open   func(string) (*sql.DB, *sqlcount.Counter, error)
		listen bool
	}{
		{"listen", sqlcount.Open, true},
		{"connector-polls", sqlcount.OpenConnector, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table, hdb := newTable(t)
			holder := sameTable(t, hdb, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
			wdb, _, err := tc.open(srv.DSN())
			require.NoError(t, err)
			defer wdb.Close()
			waiter := unsafeClient(t, wdb, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))

			l, err := holder.Acquire("job")
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(bg, 5*time.Second)
			defer cancel()
			got := acquireAsync(ctx, waiter, "job")
			require.Eventually(t, func() bool { return waiter.Stats().Waits == 1 }, 5*time.Second, time.Millisecond)
			if tc.listen {
				waitListening(t, hdb, table)
			}
			released := time.Now()
			require.NoError(t, holder.Release(l))
			r := <-got
			require.NoError(t, r.err)
			t.Logf("handoff %v, notifications %d", r.at.Sub(released), waiter.Stats().Notifications)
			require.NoError(t, waiter.Release(r.l))
		})
	}
}

// waitListening waits until some session LISTENs on the release channel
// of table (in the public schema). The channel name is the client's:
// "pglock_" and 12 bytes of the SHA-256 of schema, NUL, table name.
func waitListening(t *testing.T, db *sql.DB, table string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND strpos(query, $1) > 0`, releaseChannel(table)).Scan(&n)
		return err == nil && n > 0
	}, 5*time.Second, 5*time.Millisecond)
}

// releaseChannel is the release channel of table (in the public schema):
// "pglock_" and 12 bytes of the SHA-256 of schema, NUL, table name.
func releaseChannel(table string) string {
	sum := sha256.Sum256([]byte("\x00" + table))
	return "pglock_" + hex.EncodeToString(sum[:12])
}

// TestListenerOutlivesMissedProbe: a client whose LISTEN sessions received
// their probes keeps listening when the probe of a later session misses
// (during a failover, the new primary or the client itself may be too busy
// to deliver it within its bound). The session is replaced like a broken
// one, and releases wake the waiter through notifications again; the
// client does not conclude that notifications cannot reach it, and its
// waiters do not poll for good.
func TestListenerOutlivesMissedProbe(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, driver := range driverNames {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			table, hdb := newTable(t)
			opts := []pglock.ClientOption{pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0)}
			holder := sameTable(t, hdb, table, opts...)
			waiter := sameTable(t, openDriver(t, driver), table, opts...)
			pglock.MissProbes(waiter, func(session int) bool { return session == 2 })
			ctx := testCtx(t)

			l, err := holder.AcquireContext(ctx, "job")
			require.NoError(t, err)
			got := acquireAsync(ctx, waiter, "job")
			require.Eventually(t, func() bool { s := waiter.Stats(); return s.Listening && s.ListenerConnects == 1 },
				waitBound, time.Millisecond, "the first session never listened")

			// The server ends the first session; the second one misses its
			// probe.
			_, err = hdb.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND strpos(query, $1) > 0`, releaseChannel(table))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return !waiter.Stats().Listening }, waitBound, time.Millisecond)
			require.Eventually(t, func() bool { s := waiter.Stats(); return s.Listening && s.ListenerConnects >= 2 },
				pglock.ProbeBound+10*time.Second, time.Millisecond, "no session listened after the missed probe")

			notes := waiter.Stats().Notifications
			require.NoError(t, holder.ReleaseContext(ctx, l))
			r := <-got
			require.NoError(t, r.err)
			require.NoError(t, waiter.ReleaseContext(ctx, r.l))
			require.Eventually(t, func() bool { return waiter.Stats().Notifications > notes }, waitBound, time.Millisecond,
				"the release's notification did not reach the waiter")
		})
	}
}

// TestBoundedPGXPoolPollsInsteadOfListening checks that a pool with a
// connection limit, made from a connector, never gives a connection to
// LISTEN (it could be the one the waiters need): waiters poll, and still
// acquire.
func TestBoundedPGXPoolPollsInsteadOfListening(t *testing.T) {
	t.Parallel()
	db := openDriver(t, pgxConnector)
	db.SetMaxOpenConns(2)
	c1, table := newClientTable(t, db, shortLease...)
	c2 := sameTable(t, db, table, shortLease...)
	l1, err := c1.Acquire("a")
	require.NoError(t, err)
	got := make(chan error, 1)
	go func() {
		l2, err := c2.Acquire("a")
		if err == nil {
			err = l2.Close()
		}
		got <- err
	}()
	require.Eventually(t, func() bool { return c2.Stats().Waits == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, l1.Close())
	require.NoError(t, <-got)
	s := c2.Stats()
	require.False(t, s.Listening)
	require.Zero(t, s.ListenerConnects)
}
