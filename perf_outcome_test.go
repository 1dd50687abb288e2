package pglock_test

import (
	"context"
	"database/sql/driver"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestPerfUnknownHeartbeatOutcome: a heartbeat whose UPDATE committed but
// whose caller saw an error must leave the lock held, at the RVN the row
// now carries.
//
// The fault is injected by the counting driver after the statement has run
// to completion and committed: a real network cut exactly between the
// server's commit and the client reading the reply cannot be provoked
// reliably (pg_terminate_backend or a stopped server land before or after
// the commit, never on demand in between). Two errors are tried: a reset
// connection, and the caller's context ending right after the commit (the
// original library's issue 175).
func TestPerfUnknownHeartbeatOutcome(t *testing.T) {
	t.Parallel()
	reset := func(context.CancelFunc) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	cancelled := func(cancel context.CancelFunc) error { cancel(); return context.Canceled }
	for _, tc := range []struct {
		name   string
		inject func(context.CancelFunc) error
		bg     bool // background heartbeat instead of SendHeartbeat
	}{
		{"SendHeartbeat/reset", reset, false},
		{"SendHeartbeat/ctx-ended", cancelled, false},
		{"background/reset", reset, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table, plain := newTable(t)
			db, cnt := countedDB(t)
			const lease = 5 * time.Second
			freq := time.Duration(0)
			if tc.bg {
				freq = 200 * time.Millisecond
			}
			c := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
			l, err := c.Acquire("unknown")
			require.NoError(t, err)
			before := l.RecordVersionNumber()

			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			var injected atomic.Int32
			cnt.SetFailAfter(func(query string, _ []driver.NamedValue) error {
				if !strings.HasPrefix(query, "UPDATE") && !strings.Contains(query, "unnest") {
					return nil // the re-read that settles the outcome goes through
				}
				if !injected.CompareAndSwap(0, 1) {
					return nil
				}
				return tc.inject(cancel)
			})
			if tc.bg {
				require.Eventually(t, func() bool { return c.Stats().HeartbeatFailures >= 1 }, 10*time.Second, time.Millisecond)
				cnt.SetFailAfter(nil)
				// Let a few more ticks run from whatever RVN was settled.
				beats := c.Stats().Heartbeats
				require.Eventually(t, func() bool { return c.Stats().Heartbeats >= beats+2 }, 10*time.Second, time.Millisecond)
			} else {
				err = c.SendHeartbeat(ctx, l)
				cnt.SetFailAfter(nil)
				require.Error(t, err)
				require.NotErrorIs(t, err, pglock.ErrLockAlreadyReleased)
				var stored int64
				require.NoError(t, plain.QueryRow(`SELECT record_version_number FROM `+pq.QuoteIdentifier(table)+` WHERE name = 'unknown'`).Scan(&stored))
				require.NotEqual(t, before, stored, "the injected heartbeat committed")
				require.Equal(t, stored, l.RecordVersionNumber(), "the lock took the committed RVN")
				require.NoError(t, c.SendHeartbeat(bg, l), "the next heartbeat starts from the right RVN")
			}
			require.EqualValues(t, 1, injected.Load())
			require.False(t, l.IsReleased(), "%v", l.Err())
			require.Zero(t, c.Stats().Lost)
			require.NoError(t, c.Release(l), "the release matches the row's RVN")
		})
	}
}

// TestPerfAcquireRowInsertedConcurrently: when another transaction inserts
// the row while the acquire statement runs, the INSERT waits for it, finds
// the conflict and does not take the row, and the fallback SELECT, which
// reads the statement's older snapshot, sees no row: the statement returns
// nothing. The acquirer must then report "not acquired" (FailIfLocked) or
// keep waiting, not fail or think it holds the lock.
func TestPerfAcquireRowInsertedConcurrently(t *testing.T) {
	t.Parallel()
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	q := pq.QuoteIdentifier(table)
	seq := pq.QuoteLiteral(pq.QuoteIdentifier(table + "_rvn"))

	for _, failIfLocked := range []bool{true, false} {
		tx, err := plain.Begin()
		require.NoError(t, err)
		var rvn int64
		require.NoError(t, tx.QueryRow(`INSERT INTO `+q+` (name, record_version_number, owner) VALUES ('race', nextval(`+seq+`::regclass), 'other') RETURNING record_version_number`).Scan(&rvn))

		var rec recorder
		cnt.SetObserver(rec.observe)
		ctx, cancel := context.WithTimeout(bg, 20*time.Second)
		var opts []pglock.LockOption
		if failIfLocked {
			opts = append(opts, pglock.FailIfLocked())
		}
		got := acquireAsync(ctx, c, "race", opts...)
		// Wait until the acquire statement blocks on the uncommitted row.
		require.Eventually(t, func() bool {
			var n int
			err := plain.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0`, table).Scan(&n)
			return err == nil && n > 0
		}, 10*time.Second, time.Millisecond)
		require.NoError(t, tx.Commit())

		if failIfLocked {
			r := <-got
			require.ErrorIs(t, r.err, pglock.ErrNotAcquired)
			require.True(t, r.l.IsReleased())
		} else {
			select {
			case r := <-got:
				t.Fatalf("acquired a row held by another: %v", r.err)
			case <-time.After(300 * time.Millisecond):
			}
			_, err := plain.Exec(`DELETE FROM `+q+` WHERE name = 'race' AND record_version_number = $1`, rvn)
			require.NoError(t, err)
			r := <-got
			require.NoError(t, r.err)
			require.NoError(t, c.Release(r.l))
		}
		cancel()
		cnt.SetObserver(nil)
		ev := rec.take()
		require.NotEmpty(t, ev)
		require.Empty(t, ev[0].Rows, "the first acquire statement saw neither its own row nor the other's")
		require.NoError(t, ev[0].Err)
		_, err = plain.Exec(`DELETE FROM ` + q)
		require.NoError(t, err)
	}
}
