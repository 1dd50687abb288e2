package pglock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// acquire takes l for its name, waiting as AcquireContext describes. The
// first try goes straight to the database; only a waiter that must wait joins
// the name's queue and the release listener.
func (c *Client) acquire(ctx context.Context, l *Lock) error {
	var w *waiter
	defer func() {
		if w != nil {
			c.waits.leave(w)
		}
	}()
	waitStart := time.Now()
	if !l.failIfLocked {
		// Goroutines of this client already queue for the name: wait behind
		// them instead of racing them, so none of them starves.
		if w = c.waits.joinIfQueued(l.name); w != nil {
			c.stats.waits.Add(1)
			if err := c.waits.waitTurn(ctx, w); err != nil {
				return contextError(ctx, ErrNotAcquired)
			}
		}
	}
	for {
		if err := contextError(ctx, ErrNotAcquired); err != nil {
			return err
		}
		expected, _ := c.waits.stale(l.name, time.Now())
		start := time.Now()
		acquired, rvn, known, err := c.tryAcquire(ctx, l, expected)
		if err != nil {
			if cerr := contextError(ctx, ErrNotAcquired); cerr != nil {
				return cerr
			}
			return typeError(fmt.Errorf("pglock: cannot acquire %q: %w", l.name, err))
		}
		if acquired {
			// The lease counts from the statement's start. One that waited
			// long on the row (contenders queue on its lock) leaves little
			// of it: renew it at once rather than hand out a lock about to
			// expire. A renewal that finds the row taken over tries again.
			for acquired && time.Since(start) > c.leaseDuration/2 {
				renewStart := time.Now()
				err := c.retry(ctx, func() error {
					return c.db.QueryRowContext(ctx, c.sql.heartbeat, l.name, rvn).Scan(&rvn)
				})
				switch {
				case errors.Is(err, sql.ErrNoRows):
					acquired = false
				case err != nil:
					if cerr := contextError(ctx, ErrNotAcquired); cerr != nil {
						return cerr
					}
					return typeError(fmt.Errorf("pglock: cannot acquire %q: %w", l.name, err))
				default:
					start = renewStart
				}
			}
		}
		if acquired {
			l.hold(rvn, start)
			c.waits.forget(l.name)
			if expected.Valid {
				c.stats.steals.Add(1)
				c.log.Debug("took over a stale lock", "lock", l.name, "owner", c.owner, "rvn", rvn,
					"stale_rvn", expected.Int64, "lease", c.leaseDuration)
			}
			if w != nil {
				waited := time.Since(waitStart)
				c.stats.recordWait(waited)
				if at := w.notified.Load(); at != 0 {
					c.stats.recordHandoff(time.Duration(monoNow() - at))
				}
				c.log.Debug("waited for lock", "lock", l.name, "owner", c.owner, "rvn", rvn, "waited", waited)
			}
			return nil
		}
		if l.failIfLocked {
			if known {
				c.waits.observe(l.name, rvn, time.Now())
			}
			return &OtherError{ErrNotAcquired}
		}
		if !known {
			// The row changed under the statement (inserted or released
			// concurrently): look again at once.
			continue
		}
		c.waits.observe(l.name, rvn, time.Now())
		if w == nil {
			c.stats.waits.Add(1)
			c.log.Debug("lock is held, waiting", "lock", l.name, "owner", c.owner, "holder_rvn", rvn, "holder_rvn_known", known)
			w = c.waits.join(l.name)
			if err := c.waits.waitTurn(ctx, w); err != nil {
				return contextError(ctx, ErrNotAcquired)
			}
			continue // try again now that releases are announced
		}
		if err := c.sleep(ctx, w, l.name); err != nil {
			return err
		}
	}
}

// sleep waits until a release of name is announced, the watched RVN turns
// stale, the poll interval passes, or ctx ends.
func (c *Client) sleep(ctx context.Context, w *waiter, name string) error {
	d := c.waits.pollInterval()
	if _, staleAt := c.waits.stale(name, time.Now()); !staleAt.IsZero() {
		d = min(d, time.Until(staleAt))
	}
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return contextError(ctx, ErrNotAcquired)
	case <-w.wake:
	case <-t.C:
	}
	return nil
}

// tryAcquire sends the one acquire statement. acquired tells whether it took
// the lock; rvn is then the lock's new RVN, and otherwise the holder's RVN
// when known is true (the row may have appeared after the statement's
// snapshot, and then it is not known).
func (c *Client) tryAcquire(ctx context.Context, l *Lock, expected sql.NullInt64) (acquired bool, rvn int64, known bool, err error) {
	err = c.retry(ctx, func() error {
		var (
			data []byte
			ours bool
		)
		row := c.db.QueryRowContext(ctx, c.sql.acquire, l.name, l.data, c.owner, l.replaceData, expected)
		switch err := row.Scan(&acquired, &rvn, &data, &ours); err {
		case nil:
			known = true
			if acquired && !ours {
				l.data = data // the row kept data of its own
			}
			return nil
		case sql.ErrNoRows:
			acquired, known = false, false
			return nil
		default:
			return err
		}
	})
	return acquired, rvn, known, err
}
