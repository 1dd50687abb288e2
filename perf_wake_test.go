package pglock_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// TestPerfReleaseWakesWaiter: with a one-minute lease, a waiter blocked in
// Acquire gets the lock soon after the release, well within a ctx deadline
// of a few seconds: through LISTEN when the *sql.DB has a connection string,
// by polling when it was made from a connector.
func TestPerfReleaseWakesWaiter(t *testing.T) {
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
	sum := sha256.Sum256([]byte("\x00" + table))
	channel := "pglock_" + hex.EncodeToString(sum[:12])
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND strpos(query, $1) > 0`, channel).Scan(&n)
		return err == nil && n > 0
	}, 5*time.Second, 5*time.Millisecond)
}

// TestPerfStaleTakenOnlyAfterLease: a holder that heartbeats a few times and
// then goes silent is taken over no sooner than a whole lease after the
// waiter could first see its last RVN, measured with the monotonic clock.
// Only a lower bound is checked: the upper bound is a speed figure
// (BenchmarkCrashTakeover).
func TestPerfStaleTakenOnlyAfterLease(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	table, db := newTable(t)
	holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	l, err := holder.Acquire("stale")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	start := time.Now() // before the waiter's first attempt: it cannot see the RVN earlier
	got := acquireAsync(ctx, waiter, "stale")
	// The holder heartbeats for 1.2 leases. On a loaded machine a beat may
	// come later than a lease after the previous one: the lock is then
	// legitimately lost, and that is checked too.
	lastBeat := start
	for range 4 {
		time.Sleep(lease * 3 / 10)
		beat := time.Now() // the new RVN cannot be seen before the heartbeat began
		if err := holder.SendHeartbeat(bg, l); err != nil {
			require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
			require.GreaterOrEqual(t, time.Since(lastBeat), lease, "lost %v after its last heartbeat began: %v", time.Since(lastBeat), err)
			break
		}
		lastBeat = beat
	}
	r := <-got
	require.NoError(t, r.err)
	waited := r.at.Sub(lastBeat)
	t.Logf("taken %v after the last heartbeat began (%.2f leases)", waited, float64(waited)/float64(lease))
	require.GreaterOrEqual(t, waited, lease)
	require.EqualValues(t, 1, waiter.Stats().Steals)
	require.True(t, l.IsReleased(), "the holder's clock ended it a lease after its last heartbeat")
	require.ErrorIs(t, holder.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	require.NoError(t, waiter.Release(r.l))
}

// TestPerfFailIfLockedTakesWatchedStaleLock: FailIfLocked takes a lock whose
// RVN this client has already seen unchanged for a whole lease, and only
// then.
func TestPerfFailIfLockedTakesWatchedStaleLock(t *testing.T) {
	t.Parallel()
	const lease = 1500 * time.Millisecond
	table, db := newTable(t)
	holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	watcher := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	stranger := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	l, err := holder.Acquire("flk")
	require.NoError(t, err)
	_, err = watcher.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)

	// A heartbeat restarts the watch: a lease after the first sighting the
	// RVN is new, so the watcher must not take it.
	time.Sleep(lease / 2)
	require.NoError(t, holder.SendHeartbeat(bg, l))
	time.Sleep(lease / 2)
	_, err = watcher.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "the RVN changed within the lease")

	time.Sleep(lease + lease/5)
	_, err = stranger.Acquire("flk", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "a client that never watched it must not take it")
	taken, err := watcher.Acquire("flk", pglock.FailIfLocked())
	require.NoError(t, err, "watched unchanged for a lease")
	require.EqualValues(t, 1, watcher.Stats().Steals)
	<-l.Done()
	require.NoError(t, watcher.Release(taken))
}

// TestPerfOldClientInterop: clients of the original library never notify
// and time out waits by sleeping a lease. Emulated with their raw SQL on
// the same table: a waiter of this library picks up their release by
// polling, never takes their lock while they heartbeat, and they never take
// ours while we heartbeat.
func TestPerfOldClientInterop(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	table, db := newTable(t)
	q := pq.QuoteIdentifier(table)
	seq := pq.QuoteLiteral(pq.QuoteIdentifier(table + "_rvn"))
	nextval := func() int64 {
		var v int64
		require.NoError(t, db.QueryRow(`SELECT nextval(`+seq+`::regclass)`).Scan(&v))
		return v
	}
	// The original library's statements.
	oldAcquire := func(name string, rvn, expected int64) bool {
		res, err := db.Exec(`INSERT INTO `+q+` (name, record_version_number, data, owner) VALUES ($1, $2, NULL, 'old')
			ON CONFLICT (name) DO UPDATE SET record_version_number = $2, owner = 'old'
			WHERE `+q+`.record_version_number IS NULL OR `+q+`.record_version_number = $3`, name, rvn, expected)
		require.NoError(t, err)
		n, err := res.RowsAffected()
		require.NoError(t, err)
		return n == 1
	}
	oldHeartbeat := func(name string, rvn int64) (int64, bool) {
		next := nextval()
		res, err := db.Exec(`UPDATE `+q+` SET record_version_number = $3 WHERE name = $1 AND record_version_number = $2`, name, rvn, next)
		require.NoError(t, err)
		n, err := res.RowsAffected()
		require.NoError(t, err)
		return next, n == 1
	}

	t.Run("old holder, new waiter", func(t *testing.T) {
		waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
		rvn := nextval()
		require.True(t, oldAcquire("old-holds", rvn, 0))
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		got := acquireAsync(ctx, waiter, "old-holds")
		deadline := time.Now().Add(2 * lease)
		lastBeat := time.Now()
		for time.Now().Before(deadline) { // heartbeats for two leases
			time.Sleep(lease / 5)
			select {
			case r := <-got:
				// Only legitimate if the old client was silent for a lease
				// (a loaded machine can delay its heartbeats that long).
				require.GreaterOrEqual(t, r.at.Sub(lastBeat), lease, "took the old client's live lock: %v", r.err)
				t.Skip("the machine is too loaded: the emulated old client missed its lease")
			default:
			}
			beat := time.Now()
			next, ok := oldHeartbeat("old-holds", rvn)
			if !ok { // taken over: only legitimate after a lease of silence
				r := <-got
				require.NoError(t, r.err)
				require.GreaterOrEqual(t, r.at.Sub(lastBeat), lease, "took the old client's live lock")
				t.Skip("the machine is too loaded: the emulated old client missed its lease")
			}
			rvn, lastBeat = next, beat
		}
		notes := waiter.Stats().Notifications
		released := time.Now()
		_, err := db.Exec(`DELETE FROM `+q+` WHERE name = $1 AND record_version_number = $2`, "old-holds", rvn) // no NOTIFY
		require.NoError(t, err)
		r := <-got
		require.NoError(t, r.err)
		require.Less(t, r.at.Sub(released), lease, "picked up by polling, not by waiting out a lease")
		require.Equal(t, notes, waiter.Stats().Notifications, "the old client sent no notification")
		require.Zero(t, waiter.Stats().Steals)
		require.NoError(t, waiter.Release(r.l))
	})

	t.Run("new holder, old waiter", func(t *testing.T) {
		holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/5))
		l, err := holder.Acquire("new-holds")
		require.NoError(t, err)
		for range 2 { // the original waits a lease and tries the RVN it saw
			var seen int64
			require.NoError(t, db.QueryRow(`SELECT record_version_number FROM `+q+` WHERE name = $1`, "new-holds").Scan(&seen))
			time.Sleep(lease)
			if oldAcquire("new-holds", nextval(), seen) {
				// Only legitimate when no heartbeat landed for a lease (a
				// loaded machine); the holder must then know it lost it.
				require.True(t, l.IsReleased(), "old client took a live lock")
				t.Skip("the machine is too loaded: the holder missed its lease")
			}
		}
		require.NoError(t, holder.Release(l))
		require.True(t, oldAcquire("new-holds", nextval(), 0))
	})
}
