package pglock

import (
	"sync/atomic"
	"time"
)

// counters are the client's running totals; Stats reads them. Each is one
// atomic word, so counting costs a few nanoseconds and never blocks.
type counters struct {
	acquired          atomic.Int64
	released          atomic.Int64
	waits             atomic.Int64
	waitNanos         atomic.Int64
	maxWaitNanos      atomic.Int64
	steals            atomic.Int64
	lost              atomic.Int64
	heartbeats        atomic.Int64
	heartbeatFailures atomic.Int64
	notifications     atomic.Int64
	listens           atomic.Int64
	handoffs          atomic.Int64
	handoffNanos      atomic.Int64
	maxHandoffNanos   atomic.Int64
}

func (s *counters) recordWait(d time.Duration) {
	s.waitNanos.Add(int64(d))
	storeMax(&s.maxWaitNanos, int64(d))
}

// releasedAsLost moves a lock counted released to lost: its release found
// that the row had been taken over before.
func (s *counters) releasedAsLost() {
	s.released.Add(-1)
	s.lost.Add(1)
}

func (s *counters) recordHandoff(d time.Duration) {
	d = max(d, 0)
	s.handoffs.Add(1)
	s.handoffNanos.Add(int64(d))
	storeMax(&s.maxHandoffNanos, int64(d))
}

// storeMax raises m to v if v is larger.
func storeMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is a monotonic clock reading in nanoseconds, never 0, that fits in
// an atomic.Int64.
func monoNow() int64 {
	return int64(time.Since(monoBase)) + 1
}

// Stats is a snapshot of what a Client has done since it was made: running
// totals (counters that only grow) and two gauges, Held and Listening. The
// totals are read one by one without a common lock, so a snapshot taken
// while locks change hands may be a few events apart between fields; each
// field on its own is exact.
//
// Export it to a metrics system by reading it on each scrape: the module
// cirello.io/pglock/prometheus is a Prometheus collector of it, and the same
// fields map to OpenTelemetry asynchronous instruments (an
// Int64ObservableCounter per total, a gauge for Held and Listening). Neither
// system is a dependency of this package.
type Stats struct {
	// Acquired counts locks acquired, including takeovers of stale locks.
	Acquired int64
	// Released counts locks released by Release, Close or Do.
	Released int64
	// Waits counts acquisitions that found the lock held and waited, from
	// the moment they began to wait.
	Waits int64
	// WaitTime is the total time of the waits that ended, whether they
	// acquired the lock or gave up (their context ended): WaitTime/Waits is
	// the mean wait, once no wait is in progress.
	WaitTime time.Duration
	// MaxWait is the longest of those waits.
	MaxWait time.Duration
	// Steals counts stale locks taken over after their record version
	// number stayed unchanged for a whole lease: their holder died or
	// stalled.
	Steals int64
	// Lost counts held locks lost before Release: taken over, or no
	// heartbeat succeeded for a whole lease.
	Lost int64
	// Heartbeats counts lock refreshes that succeeded (one per lock, even
	// when a batch refreshes many in one statement).
	Heartbeats int64
	// HeartbeatFailures counts heartbeat statements that failed. A lock is
	// lost only when no heartbeat succeeds for a whole lease.
	HeartbeatFailures int64
	// Notifications counts release notifications received.
	Notifications int64
	// ListenerConnects counts LISTEN connections established: one when the
	// first waiter comes, one more after each reconnection. A connection
	// counts once a probe notification reached it; one that notifications
	// cannot reach (a pooler in transaction mode) never counts.
	ListenerConnects int64
	// Listening is true while release notifications reach this client.
	// While waiters wait and it is false, they poll: a pooler in
	// transaction mode, or a *sql.DB that gives no way to LISTEN.
	Listening bool
	// Handoffs counts waits that ended with an acquisition after a release
	// notification woke the waiter.
	Handoffs int64
	// HandoffTime is the total time from the release notification reaching
	// the waiter to the waiter holding the lock.
	HandoffTime time.Duration
	// MaxHandoff is the longest of those handoffs.
	MaxHandoff time.Duration
	// AbandonedStatements counts statements the client stopped waiting for
	// because their context ended while the driver did not return: lib/pq,
	// for one, keeps reading a dead connection until TCP gives up. The call
	// returned in time; the statement's outcome is unknown.
	AbandonedStatements int64
	// StuckStatements is how many of those have not returned yet. Each
	// keeps a goroutine and a connection until its socket dies; a number
	// that stays up points at connections that die without a reset (see
	// docs/operations.md on TCP keepalive and timeouts).
	StuckStatements int64
}

// Held returns the number of locks the snapshot counts as held: acquired,
// and neither released nor lost.
func (s Stats) Held() int64 {
	return s.Acquired - s.Released - s.Lost
}

// Stats returns a snapshot of the client's counters. It is cheap (a few
// atomic loads and one short mutex) and safe to call from any goroutine.
func (c *Client) Stats() Stats {
	s := &c.stats
	// A LISTEN session is counted in listens before it shows as listening:
	// reading Listening first, a snapshot that shows it listening counts it.
	listening := c.waits.isListening()
	return Stats{
		Acquired:          s.acquired.Load(),
		Released:          s.released.Load(),
		Waits:             s.waits.Load(),
		WaitTime:          time.Duration(s.waitNanos.Load()),
		MaxWait:           time.Duration(s.maxWaitNanos.Load()),
		Steals:            s.steals.Load(),
		Lost:              s.lost.Load(),
		Heartbeats:        s.heartbeats.Load(),
		HeartbeatFailures: s.heartbeatFailures.Load(),
		Notifications:     s.notifications.Load(),
		ListenerConnects:  s.listens.Load(),
		Listening:         listening,
		Handoffs:          s.handoffs.Load(),
		HandoffTime:       time.Duration(s.handoffNanos.Load()),
		MaxHandoff:        time.Duration(s.maxHandoffNanos.Load()),

		AbandonedStatements: c.calls.Abandoned(),
		StuckStatements:     c.calls.Stuck(),
	}
}
