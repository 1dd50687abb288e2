package pglock

import (
	"sync/atomic"
	"time"
)

// counter names one of a client's running totals, kept in one atomic word
// of counters, so that counting costs a few nanoseconds and never blocks.
// counterFields says which Stats field each fills; a counter is defined by
// its constant and that entry, and nowhere else.
type counter uint8

const (
	counterAcquired counter = iota
	counterReleased
	counterWaits
	counterWaitNanos
	counterMaxWaitNanos
	counterSteals
	counterLost
	counterHeartbeats
	counterHeartbeatFailures
	counterNotifications
	counterListens
	counterHandoffs
	counterHandoffNanos
	counterMaxHandoffNanos
	numCounters
)

// counterFields is, for each counter, the Stats field it fills: the only
// list Stats copies from. A test checks that every counter has an entry and
// that each fills a Stats field of its own.
var counterFields = [numCounters]func(*Stats) *int64{
	counterAcquired:          func(s *Stats) *int64 { return &s.Acquired },
	counterReleased:          func(s *Stats) *int64 { return &s.Released },
	counterWaits:             func(s *Stats) *int64 { return &s.Waits },
	counterWaitNanos:         func(s *Stats) *int64 { return (*int64)(&s.WaitTime) },
	counterMaxWaitNanos:      func(s *Stats) *int64 { return (*int64)(&s.MaxWait) },
	counterSteals:            func(s *Stats) *int64 { return &s.Steals },
	counterLost:              func(s *Stats) *int64 { return &s.Lost },
	counterHeartbeats:        func(s *Stats) *int64 { return &s.Heartbeats },
	counterHeartbeatFailures: func(s *Stats) *int64 { return &s.HeartbeatFailures },
	counterNotifications:     func(s *Stats) *int64 { return &s.Notifications },
	counterListens:           func(s *Stats) *int64 { return &s.ListenerConnects },
	counterHandoffs:          func(s *Stats) *int64 { return &s.Handoffs },
	counterHandoffNanos:      func(s *Stats) *int64 { return (*int64)(&s.HandoffTime) },
	counterMaxHandoffNanos:   func(s *Stats) *int64 { return (*int64)(&s.MaxHandoff) },
}

// counters are the client's running totals, one word per counter; Stats
// reads them.
type counters struct {
	words [numCounters]atomic.Int64
}

// add adds n to counter k.
func (s *counters) add(k counter, n int64) {
	s.words[k].Add(n)
}

// snapshot fills the Stats fields of the counters, read one by one in the
// order of their constants: Acquired before Released and Lost.
func (s *counters) snapshot(out *Stats) {
	for k := range numCounters {
		*counterFields[k](out) = s.words[k].Load()
	}
}

func (s *counters) recordWait(d time.Duration) {
	s.add(counterWaitNanos, int64(d))
	storeMax(&s.words[counterMaxWaitNanos], int64(d))
}

// releasedAsLost moves a lock counted released to lost: its release found
// that the row had been taken over before.
func (s *counters) releasedAsLost() {
	s.add(counterReleased, -1)
	s.add(counterLost, 1)
}

func (s *counters) recordHandoff(d time.Duration) {
	d = max(d, 0)
	s.add(counterHandoffs, 1)
	s.add(counterHandoffNanos, int64(d))
	storeMax(&s.words[counterMaxHandoffNanos], int64(d))
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
	// A LISTEN session is counted in listens before it shows as listening:
	// reading Listening first, a snapshot that shows it listening counts it.
	out := Stats{Listening: c.waits.isListening()}
	c.stats.snapshot(&out)
	out.AbandonedStatements = c.calls.Abandoned()
	out.StuckStatements = c.calls.Stuck()
	return out
}
