package pglock

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/lib/pq"
)

// A statement that moves a lock's row (a heartbeat) may fail and still have
// committed (the connection broke after the commit), or may commit later
// (the client gave up on it, and the server ran it all the same). Its
// outcome is unknown. The lock then keeps the RVN it knows, but is
// "unsettled" from the start of that statement until a heartbeat of its own
// succeeds: the row may carry a newer RVN of our making. Whoever finds the
// row without the known RVN (the next heartbeat, SendHeartbeat, Release,
// Guard, Proclaim) reads it back before calling the lock lost, so a fault
// in the wrong millisecond does not cost the lock; and a lease found by a
// read-back counts from the start of the earliest statement that could have
// written it, never from a later one, so the lock is never counted held
// after a waiter may have taken it over.

// rowState is a lock row as read back: its RVN (NULL once released with
// KeepOnRelease, or when the row is gone) and owner.
type rowState struct {
	rvn   sql.NullInt64
	owner sql.NullString
}

// markUnsettled records that a statement begun at start may have moved l's
// row.
func (l *Lock) markUnsettled(start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unsettled.IsZero() || start.Before(l.unsettled) {
		l.unsettled = start
	}
}

// unsettledSince returns the start of the earliest statement that may have
// moved l's row unbeknownst to it, or the zero time.
func (l *Lock) unsettledSince() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unsettled
}

// adoptLocked takes rvn, read back from the row with our owner, as the
// lock's RVN: only when it is newer than the RVN the lock knows and a
// statement of unknown outcome could have written it. Its lease counts from
// the start of the earliest such statement. It reports whether it adopted
// rvn. l.mu must be held.
func (l *Lock) adoptLocked(rvn int64) bool {
	if l.unsettled.IsZero() || rvn <= l.rvn {
		return false
	}
	l.rvn = rvn
	if l.unsettled.After(l.refreshedAt) {
		l.refreshedAt = l.unsettled
		l.armLocked()
	}
	l.unsettled = time.Time{}
	return true
}

// settledState is what a read-back asks about: the RVN a lock knew and the
// start of its earliest statement of unknown outcome, when the read began.
type settledState struct {
	rvn       int64
	unsettled time.Time
}

// asked returns the state a read-back of l starting now asks about.
func (l *Lock) asked() settledState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return settledState{l.rvn, l.unsettled}
}

// settleTo settles l from its row r, read back by a read that began in
// state asked. A row still at the known RVN and owner was not moved: the
// lock is held if its lease runs. A row at a newer RVN with our owner was
// moved by a statement of ours: adoptLocked dates its lease. Anything else
// (no row, a released row, another owner, an older RVN) means the lock is
// lost. An answer to a state the lock has left (it refreshed, or met
// another statement of unknown outcome, meanwhile) says nothing about it
// and changes nothing. It reports whether the lock is still held.
func (l *Lock) settleTo(r rowState, asked settledState) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.endedLocked(l.now()):
		return false
	case l.rvn != asked.rvn || !l.unsettled.Equal(asked.unsettled):
		return true
	case r.rvn.Valid && r.rvn.Int64 == l.rvn && r.owner.String == l.owner:
		return true
	case r.rvn.Valid && r.owner.String == l.owner && l.adoptLocked(r.rvn.Int64):
		return true
	}
	l.endLocked(errStolen)
	return false
}

// markUnknown handles a statement begun at start that failed with err on
// locks: unless err shows it never ran, its outcome is unknown, so the
// locks are marked unsettled. It reports whether it marked them. Their rows
// are read back when a later statement finds them moved (see moved and
// resettle), or at once by a caller that can wait (readBack).
func markUnknown(locks []*Lock, start time.Time, err error) bool {
	if neverRan(err) {
		return false
	}
	for _, l := range locks {
		l.markUnsettled(start)
	}
	return true
}

// readBack reads back the rows of locks whose statement's outcome is
// unknown, so that a caller such as SendHeartbeat leaves its lock at the
// RVN its row carries: within ctx when ctx leaves time for it, else on a
// goroutine of the client's runner, within attemptTimeout, so that a
// context that ended just as the statement committed (the original
// library's issue 175) does not leave the lock behind its row for long.
func (c *Client) readBack(ctx context.Context, locks []*Lock) {
	if deadline, ok := ctx.Deadline(); ctx.Err() == nil && (!ok || time.Until(deadline) > c.attemptTimeout()/4) {
		ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
		defer cancel()
		c.settle(ctx, locks)
		return
	}
	c.calls.Spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
		defer cancel()
		c.settle(ctx, locks)
	})
}

// settle reads the rows of unsettled locks back, in one statement, within
// ctx, and settles each from its row (see settleTo). When the read fails it
// returns false and nothing changes: the lease expiry still ends the locks
// in time if nothing settles them before.
func (c *Client) settle(ctx context.Context, locks []*Lock) bool {
	if len(locks) == 0 {
		return true
	}
	names := make(pq.StringArray, len(locks))
	asked := make([]settledState, len(locks))
	for i, l := range locks {
		names[i], asked[i] = l.name, l.asked()
	}
	current, err := c.readRows(ctx, names)
	if err != nil {
		c.log.Debug("cannot read back locks of unknown state", "locks", len(locks), "error", err)
		return false
	}
	for i, l := range locks {
		l.settleTo(current[l.name], asked[i])
	}
	return true
}

// readRows reads the RVN and owner of the rows of names, in one statement,
// on the client's own connection.
func (c *Client) readRows(ctx context.Context, names pq.StringArray) (map[string]rowState, error) {
	current := make(map[string]rowState, len(names))
	err := c.keep.run(ctx, func(ctx context.Context, q querier) error {
		return retry(ctx, c.log, func() error {
			clear(current)
			return eachRow(ctx, q, func(rows *sql.Rows) error {
				var (
					name string
					r    rowState
				)
				if err := rows.Scan(&name, &r.rvn, &r.owner); err != nil {
					return err
				}
				current[name] = r
				return nil
			}, c.sql.reread, names)
		})
	})
	return current, err
}

// readOne reads the RVN and owner of name's row, within an attempt's time.
func (c *Client) readOne(ctx context.Context, name string) (rowState, error) {
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	current, err := c.readRows(ctx, pq.StringArray{name})
	return current[name], err
}

// resettle reads back, in one statement, the unsettled locks a heartbeat
// found moved, before calling them lost.
func (c *Client) resettle(locks []*Lock) {
	ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
	defer cancel()
	c.settle(ctx, locks)
}

// moved handles finding l's row without its RVN (its op lock held): the
// lock is lost, unless a statement of unknown outcome moved the row, which
// a read-back tells. It reports whether the lock is still held, and false
// with an error when the read-back failed (the lock is then still
// unsettled, not lost).
func (c *Client) moved(ctx context.Context, l *Lock) (bool, error) {
	if l.unsettledSince().IsZero() {
		l.end(errStolen)
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	if !c.settle(ctx, []*Lock{l}) {
		return false, &UnavailableError{errUnsettled}
	}
	return !l.IsReleased(), nil
}

// neverRan reports whether err shows that the statement it came from had
// no effect: no connection could be had for it, or the server answered it
// with an error, which rolls an autocommit statement back (a serialization
// failure, a pooler in transaction mode that lost the statement between its
// parse and its bind, ...). A broken connection or a server shutting down
// leaves the outcome unknown: the commit may have happened before.
func neverRan(err error) bool {
	var ns *notSentError
	if errors.As(err, &ns) || isSplit(err) {
		return true
	}
	switch state := sqlState(err); state {
	case "53300", "57P03": // refused at connection time
		return true
	case "":
		return false
	default:
		return !isUnavailable(err)
	}
}
