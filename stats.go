package pglock

import (
	"sync/atomic"
	"time"
)

// counters are the client's running totals; Stats reads them.
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
}

func (s *counters) recordWait(d time.Duration) {
	s.waitNanos.Add(int64(d))
	for {
		m := s.maxWaitNanos.Load()
		if int64(d) <= m || s.maxWaitNanos.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Stats is a snapshot of what a Client has done since it was made. It is
// cheap to take and safe to take from any goroutine.
type Stats struct {
	Acquired          int64         // locks acquired
	Released          int64         // locks released by Release, Close or Do
	Waits             int64         // acquisitions that had to wait for a holder
	WaitTime          time.Duration // total time those waits took until acquired
	MaxWait           time.Duration // longest of those waits
	Steals            int64         // stale locks taken over after a lease of silence
	Lost              int64         // held locks lost: taken over, or no heartbeat for a lease
	Heartbeats        int64         // lock refreshes that succeeded
	HeartbeatFailures int64         // heartbeat statements that failed
	Notifications     int64         // release notifications received
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
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
	}
}
