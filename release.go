package pglock

import (
	"context"
	"fmt"
	"time"
)

// release releases l as ReleaseContext describes. It holds l's op lock, so
// no heartbeat of l is in flight meanwhile.
func (c *Client) release(ctx context.Context, l *Lock) error {
	if !l.startReleasing() {
		return ErrLockAlreadyReleased
	}
	if err := l.op.lock(ctx); err != nil {
		l.stopReleasing()
		return contextError(ctx, fmt.Errorf("pglock: cannot release %q: a heartbeat of it is in flight: %w", l.name, err))
	}
	defer l.op.unlock()
	held, lapsed := l.state()
	affected, err := c.deleteRow(ctx, l, held.rvn)
	switch {
	case err != nil && neverRan(err):
		// Nothing reached the server: the row is as it was, the lock still
		// held unless its lease lapsed, and Release may be called again.
		l.stopReleasing()
		return releaseError(l, err)
	case err != nil:
		return c.releaseUnknown(ctx, l, held, lapsed, err)
	}
	c.heartbeats.remove(l)
	if affected == 0 {
		l.end(errStolen)
		return &OtherError{errStolen}
	}
	c.released(l, held.rvn)
	return nil
}

// deleteRow sends the release statement for l at rvn, reading the row back
// when the lock is unsettled and the row was not at rvn.
func (c *Client) deleteRow(ctx context.Context, l *Lock, rvn int64) (int64, error) {
	affected, err := c.releaseStatement(ctx, l, rvn)
	if err != nil || affected > 0 || l.unsettledSince().IsZero() {
		return affected, err
	}
	held, merr := c.moved(ctx, l) // the row may carry the RVN of a statement of unknown outcome
	switch {
	case merr != nil:
		return 0, merr
	case !held:
		return 0, nil
	}
	now, _ := l.state()
	return c.releaseStatement(ctx, l, now.rvn)
}

// releaseStatement deletes l's row at rvn (or clears its RVN under
// KeepOnRelease) on the client's own connection, and notifies waiters.
func (c *Client) releaseStatement(ctx context.Context, l *Lock, rvn int64) (int64, error) {
	query := c.sql.release
	if l.keepOnRelease {
		query = c.sql.releaseKeep
	}
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	var affected int64
	err := c.keep.runWarm(ctx, func(ctx context.Context, q querier) error {
		return retry(ctx, c.log, func() error {
			var err error
			affected, err = execAffected(ctx, q, query, l.name, rvn, c.sql.channel, l.owner)
			return err
		})
	})
	if err != nil {
		return 0, err // a statement left behind may still write affected
	}
	return affected, nil
}

// releaseUnknown handles a release whose statement failed in a way that
// leaves its outcome unknown: it may have deleted the row, or may still.
// The lock ends at once, so it is never counted held while a waiter may
// already have it. The delete is idempotent: it is sent again, on fresh
// connections, until it answers, ctx ends or a quarter of a lease passed;
// a row left behind expires after a lease.
func (c *Client) releaseUnknown(ctx context.Context, l *Lock, held heldAt, lapsed bool, err error) error {
	if l.end(errReleaseUnknown) {
		c.stats.released.Add(1)
	}
	c.heartbeats.remove(l)
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		affected, rerr := c.releaseStatement(ctx, l, held.rvn)
		switch {
		case rerr == nil && affected == 0 && lapsed:
			return &OtherError{errStolen} // the lease had lapsed: someone may have taken the row
		case rerr == nil:
			// Deleted now, or by the first try: within the lease nobody
			// else could take the row.
			c.waits.announce(l.name, false)
			return nil
		}
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return releaseError(l, fmt.Errorf("%w; the row may stay until its lease runs out", err))
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// released records a release that deleted l's row at rvn.
func (c *Client) released(l *Lock, rvn int64) {
	if l.end(errReleased) {
		c.stats.released.Add(1) // a lock that lapsed was counted lost already
	}
	c.waits.announce(l.name, false) // this client's own waiters need no NOTIFY
	c.log.Debug("lock released", "lock", l.name, "owner", l.owner, "rvn", rvn)
}

// releaseError types the error of a failed release.
func releaseError(l *Lock, err error) error {
	return typeError(fmt.Errorf("pglock: cannot release %q: %w", l.name, withPoolerHint(err)))
}

// startReleasing marks l as being released; it reports false when it was
// already.
func (l *Lock) startReleasing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.releasing {
		return false
	}
	l.releasing = true
	return true
}

// stopReleasing undoes startReleasing, for a release that did not happen.
func (l *Lock) stopReleasing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releasing = false
}
