package pglock

import (
	"context"
	"database/sql"
	"time"
)

// A heartbeat whose statement failed may have committed all the same (the
// connection broke after the commit), or may still commit later (the client
// gave up on it, and the server ran it before the cancel arrived). settle
// reads the row back, but a read back cannot see a commit yet to come, and
// may fail itself. So the lock is "unsettled" from such a failure until a
// heartbeat of its own succeeds: it keeps the RVN it knows, but the row may
// carry a new one of our own making. Whoever finds the row without the known
// RVN (the next heartbeat, SendHeartbeat, Release, Guard) reads it back
// again before calling the lock lost, so a fault in the wrong millisecond
// does not cost the lock.

// rowState is a lock row as read back: its RVN (NULL once released with
// KeepOnRelease) and owner.
type rowState struct {
	rvn   sql.NullInt64
	owner sql.NullString
}

// settleTimeout bounds a read-back.
func (c *Client) settleTimeout() time.Duration {
	return max(c.heartbeatFrequency, c.leaseDuration/4)
}

// markUnsettled records that a heartbeat begun at start has an unknown
// outcome.
func (l *Lock) markUnsettled(start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unsettled.IsZero() || start.Before(l.unsettled) {
		l.unsettled = start
	}
}

// unsettledSince returns the start of the earliest heartbeat of l whose
// outcome is unknown, or the zero time.
func (l *Lock) unsettledSince() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unsettled
}

// decide settles l, held at prev, from its row r as read back by a read that
// ended at readEnd, after a heartbeat of unknown outcome begun at start. A row
// still at the old RVN was not bumped. A row at a new RVN with our owner is
// ours when the read ended before the old lease ran out (less the holder's
// margin, see holdFor): no waiter can take a row over before that, so only
// our own heartbeat can have moved it. Anything else (no row, a released
// row, another owner, a read too late) means the lock is lost. It reports
// whether the lock is still held.
func (c *Client) decide(l *Lock, prev heldAt, r rowState, readEnd, start time.Time) bool {
	switch {
	case !r.rvn.Valid:
		l.end(errStolen)
		return false
	case r.rvn.Int64 == prev.rvn:
		return !l.IsReleased()
	case r.owner.String == c.owner && readEnd.Before(prev.at.Add(c.holdFor())):
		return l.refresh(r.rvn.Int64, start)
	default:
		l.end(errStolen)
		return false
	}
}

// resettle reads back the unsettled locks that a heartbeat found moved, one
// by one, before calling them lost.
func (c *Client) resettle(locks []*Lock, prev map[*Lock]heldAt) {
	for _, l := range locks {
		ctx, cancel := context.WithTimeout(context.Background(), c.settleTimeout())
		c.settle(ctx, []*Lock{l}, prev, l.unsettledSince())
		cancel()
	}
}

// moved handles finding l's row without its RVN, l held at prev: the lock is
// lost, unless a heartbeat of unknown outcome moved the row, which a read
// back tells. It reports whether the lock is still held, and false with an
// error when the read back failed (the lock is then still unsettled, not
// lost). l.opMu must be held.
func (c *Client) moved(l *Lock, prev heldAt) (bool, error) {
	since := l.unsettledSince()
	if since.IsZero() {
		l.end(errStolen)
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.settleTimeout())
	defer cancel()
	if !c.settle(ctx, []*Lock{l}, map[*Lock]heldAt{l: prev}, since) {
		return false, &UnavailableError{errUnsettled}
	}
	return !l.IsReleased(), nil
}
