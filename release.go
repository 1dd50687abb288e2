package pglock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A release ends the lock locally before anything is sent: Done closes and
// the heartbeat stops first, so no goroutine of the holder still believes
// once the statement that frees the row commits and a waiter takes over.
// Freeing the row comes after, and whatever becomes of it the lock stays
// ended: the row is freed by a retry within the caller's context, by a
// later Release of the same Lock, by a bounded attempt in the background
// when the caller's context had ended, or it expires a lease after its last
// heartbeat. It is never kept alive.

// release releases l as ReleaseContext describes.
func (c *Client) release(ctx context.Context, l *Lock) error {
	first, ok := l.beginRelease()
	if !ok {
		return ErrLockAlreadyReleased
	}
	c.heartbeats.remove(l)
	if first {
		c.stats.add(counterReleased, 1) // a lock that lapsed was counted lost already
	}
	if ctx.Err() != nil || l.op.lock(ctx) != nil {
		// A heartbeat of l may be in flight: a bounded attempt frees the
		// row once it returned.
		c.freeLater(l)
		return releaseError(l, fmt.Errorf("%w; the lock is no longer held, and its row is freed in the background or expires a lease after its last heartbeat", context.Cause(ctx)))
	}
	defer l.op.unlock()
	return c.free(ctx, l, first)
}

// freeLater frees l's row on a goroutine of the client's runner, within an
// attempt's time, for a release whose caller's context had ended.
func (c *Client) freeLater(l *Lock) {
	c.calls.Spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
		defer cancel()
		if err := l.op.lock(ctx); err != nil {
			l.endFreeing(false)
			return
		}
		defer l.op.unlock()
		if err := c.free(ctx, l, false); err != nil && !errors.Is(err, ErrLockAlreadyReleased) {
			c.log.Debug("cannot free the row of a released lock; it expires after a lease", "lock", l.name, "error", err)
		}
	})
}

// free sends the statement that frees l's row (l's op lock held) until it
// answers, ctx ends, it is refused, or two attempts' time passed. An answer
// that affected no row means the row had moved on: the lock had been lost
// before its release, unless an earlier try of unknown outcome freed it.
// first tells whether this release ended a held lock.
func (c *Client) free(ctx context.Context, l *Lock, first bool) error {
	lapsed := l.lapsedBeforeRelease()
	ctx, cancel := context.WithTimeout(ctx, 2*c.attemptTimeout())
	defer cancel()
	unknown := false
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		affected, err := c.deleteRow(ctx, l, l.RecordVersionNumber())
		switch {
		case err == nil && (affected > 0 || unknown && !lapsed):
			// Freed now, or by an earlier try: within the lease nobody else
			// could take the row.
			l.endFreeing(true)
			c.freed(l)
			return nil
		case err == nil:
			l.endFreeing(true)
			if first {
				c.stats.releasedAsLost()
			}
			return &OtherError{errStolen}
		case !neverRan(err):
			unknown = true
		case !retriable(err):
			l.endFreeing(false)
			return releaseError(l, err)
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			l.endFreeing(false)
			return releaseError(l, fmt.Errorf("%w (%w); the lock is no longer held: call Release again to free its row, or it expires a lease after its last heartbeat", err, ctx.Err()))
		}
	}
}

// retriable reports whether a release that never reached the server may be
// tried again: no connection could be had. An answer of the server (a
// missing table, a permission) would only come back the same.
func retriable(err error) bool {
	var ns *notSentError
	return errors.As(err, &ns) || isSplit(err) || isUnavailable(err)
}

// sleepCtx waits d, and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// deleteRow sends the release statement for l at rvn. When the row was not
// at rvn and a statement of l's of unknown outcome may have moved it, it
// reads the row back, and frees it at the RVN it carries if that RVN is
// newer, with l's owner, and no other Lock of this client holds the name.
func (c *Client) deleteRow(ctx context.Context, l *Lock, rvn int64) (int64, error) {
	affected, err := c.releaseStatement(ctx, l, rvn)
	if err != nil || affected > 0 || l.unsettledSince().IsZero() {
		return affected, err
	}
	r, err := c.readOne(ctx, l.name)
	switch {
	case err != nil:
		return 0, err
	case !r.rvn.Valid || r.rvn.Int64 <= rvn || r.owner.String != l.owner || c.live.holdsOther(l.name, l):
		return 0, nil
	}
	return c.releaseStatement(ctx, l, r.rvn.Int64)
}

// releaseStatement deletes l's row at rvn (or clears its RVN under
// KeepOnRelease) on the client's own connection, and notifies waiters.
func (c *Client) releaseStatement(ctx context.Context, l *Lock, rvn int64) (int64, error) {
	release, releaseKeep, _ := c.releaseSQL()
	query := release
	if l.keepOnRelease {
		query = releaseKeep
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

// freed records a release that freed l's row.
func (c *Client) freed(l *Lock) {
	c.waits.announce(l.name, false) // this client's own waiters need no NOTIFY
	c.log.Debug("lock released", "lock", l.name, "owner", l.owner, "rvn", l.RecordVersionNumber())
}

// releaseError types the error of a failed release.
func releaseError(l *Lock, err error) error {
	return typeError(fmt.Errorf("pglock: cannot release %q: %w", l.name, withPoolerHint(err)))
}

// beginRelease ends l for a release, before any statement is sent, and
// marks a release attempt running. first reports whether this call ended a
// held lock; ok is false when there is nothing to do: the row was freed
// already, or another release attempt is running.
func (l *Lock) beginRelease() (first, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.freed || l.freeing {
		return false, false
	}
	l.freeing = true
	if l.released {
		return false, true // a release that failed before: free the row now
	}
	l.released = true
	return l.endLocked(errReleased), true
}

// endFreeing ends a release attempt; freed tells that the row is freed or
// gone, so that a later Release has nothing to do.
func (l *Lock) endFreeing(freed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.freeing, l.freed = false, freed
}

// lapsedBeforeRelease reports whether l had ended before its release
// (its lease lapsed, or it was found lost): a waiter may then have taken
// the row.
func (l *Lock) lapsedBeforeRelease() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !errors.Is(l.endErr, errReleased)
}
