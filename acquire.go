package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// acquire takes l for its name, waiting as AcquireContext describes. The
// first try goes straight to the database; only a waiter that must wait joins
// the name's queue and the release listener. When FailIfLocked refuses, the
// result tells who holds the lock.
func (c *Client) acquire(ctx context.Context, l *Lock) (attemptResult, error) {
	var w *waiter
	waitStart := time.Now()
	defer func() {
		if w != nil {
			if !w.timed { // a wait that gave up counts its time too
				c.stats.recordWait(time.Since(waitStart))
			}
			c.leaveQueue(w)
			c.waits.leave(w)
		}
	}()
	// The queue is looked up when a wait begins: an uncontended acquire
	// stays one statement.
	l.fair = c.fq.state.Load() == queuePresent && !l.failIfLocked && l.sem == nil
	if !l.failIfLocked {
		// Goroutines of this client already queue for the name: wait behind
		// them instead of racing them, so none of them starves.
		if w = c.waits.joinIfQueued(l.queue()); w != nil {
			c.seat(ctx, l, w)
			c.stats.add(counterWaits, 1)
			l.waiting = true
			if err := c.waitTurn(ctx, w, l, true); err != nil {
				return attemptResult{}, err
			}
		}
	}
	badConns := 0
	for {
		if err := contextError(ctx, ErrNotAcquired); err != nil {
			return attemptResult{}, err
		}
		res, err := c.attemptAny(ctx, l)
		if errors.Is(err, driver.ErrBadConn) {
			badConns++
		}
		switch {
		case errors.Is(err, driver.ErrBadConn) && badConns <= maxBadConns:
			// The statement may have taken the row before its reply was
			// lost: the next attempt recognises the row as ours.
			l.maybeTaken = true
			continue
		case err != nil:
			return res, c.acquireError(ctx, l, err)
		case res.acquired:
			c.acquired(l, res, w, waitStart)
			return res, nil
		case l.failIfLocked:
			return res, &OtherError{ErrNotAcquired}
		case !res.known && !res.queued:
			continue // the row changed under the statement: look again at once
		case w == nil:
			w = c.waits.join(l.queue())
			wasFair := l.fair
			c.seat(ctx, l, w)
			c.stats.add(counterWaits, 1)
			c.log.Debug("lock is held, waiting", "lock", l.queue(), "owner", c.owner, "holder_rvn", res.rvn)
			l.waiting = true
			// The attempt saw the whole queue when it went through it: a
			// waiter it found no entry ahead of need not look again.
			if err := c.waitTurn(ctx, w, l, res.queued || !wasFair); err != nil {
				return res, err
			}
		default:
			c.rejoin(ctx, w, res)
			w.seat.mustLook = res.queued
			if err := c.awaitAny(ctx, w, l); err != nil {
				return res, err
			}
		}
	}
}

// waitTurn waits until w heads its client's queue for l's name. A waiter
// in the fair queue then waits until it may take the row, instead of
// attempting at once; look has it look at the queue first.
func (c *Client) waitTurn(ctx context.Context, w *waiter, l *Lock, look bool) error {
	if err := c.waits.waitTurn(ctx, w); err != nil {
		return contextError(ctx, ErrNotAcquired)
	}
	if l.seat == nil {
		return nil
	}
	w.seat.mustLook = look
	return c.awaitQueued(ctx, w, l)
}

// maxBadConns is how many attempts in a row one acquire sends again after
// driver.ErrBadConn. Each such answer drops its connection from the pool;
// after a server killed every connection of a pool (a restart,
// pg_terminate_backend), its idle ones answer so one after the other.
const maxBadConns = 8

// attemptResult is what one acquire attempt found.
type attemptResult struct {
	acquired bool
	rvn      int64         // the lock's new RVN, or the holder's when known
	known    bool          // the holder's RVN and owner were seen
	holder   string        // the holder's owner
	start    time.Time     // when the statement that took the lock began
	stale    sql.NullInt64 // the stale RVN a takeover expected
	data     []byte        // the data the row kept, when not the caller's
	ours     bool          // the row holds the caller's data
	inserted bool          // the statement created the row
	queued   bool          // other clients' entries in the fair queue came first
	unseated bool          // the waiter's entry in the fair queue is gone
	tookOver bool          // the row was held, at the stale RVN
	renew    bool          // the RVN must be bumped before the lock is used
}

// attemptAny is attempt, or a semaphore's attempt for a permit.
func (c *Client) attemptAny(ctx context.Context, l *Lock) (attemptResult, error) {
	if l.sem != nil {
		return l.sem.attempt(ctx, l)
	}
	return c.attempt(ctx, l)
}

// awaitAny is awaitChance, or a semaphore's wait for a permit.
func (c *Client) awaitAny(ctx context.Context, w *waiter, l *Lock) error {
	if l.sem != nil {
		return l.sem.awaitChance(ctx, w, l)
	}
	if l.seat != nil {
		return c.awaitQueued(ctx, w, l)
	}
	return c.awaitChance(ctx, w, l)
}

// attempt sends the acquire statement once, taking the lock over when this
// client watched the holder's RVN stay the same for a lease, and renews a
// lock whose statement waited long. A holder it finds is watched.
func (c *Client) attempt(ctx context.Context, l *Lock) (attemptResult, error) {
	expected, _ := c.waits.stale(l.name, c.clock.now())
	start := c.clock.now()
	res, err := c.tryAcquire(ctx, l, expected)
	if err != nil {
		return res, err
	}
	res.start, res.stale = start, expected
	if !res.acquired && res.known && res.holder == c.owner && l.maybeTaken && !c.live.holdsOther(l.name, l) {
		// An earlier attempt of this call, whose reply was lost, took the
		// row: it carries this client's owner, and no Lock of it holds the
		// name.
		// Its RVN is bumped before it is used: waiters may have watched it
		// for a while.
		res.acquired, res.renew = true, true
	}
	if res.acquired {
		return c.renewIfLate(ctx, l, res)
	}
	if res.known {
		c.waits.observe(l.name, res.rvn, c.clock.now())
	}
	return res, nil
}

// renewIfLate renews a lock whose acquire statement waited long on the row
// (contenders queue on its lock): the lease counts from the statement's
// start, and handing out a lock about to expire helps nobody. A renewal
// that finds the row taken over reports the lock not acquired.
func (c *Client) renewIfLate(ctx context.Context, l *Lock, res attemptResult) (attemptResult, error) {
	for res.acquired && (res.renew || c.clock.now().Sub(res.start) > c.leaseDuration/2) {
		res.renew = false
		start := c.clock.now()
		rvn := res.rvn
		var renewed int64
		err := c.statement(ctx, func(ctx context.Context) error {
			return retry(ctx, c.log, func() error {
				return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
					return q.QueryRowContext(ctx, c.sql.heartbeat, l.name, rvn, c.sql.sequence, l.owner).Scan(&renewed)
				})
			})
		}, nil)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			res.acquired = false
		case err != nil:
			return res, err
		default:
			res.rvn, res.start = renewed, start
		}
	}
	return res, nil
}

// acquired records a successful acquisition of l.
func (c *Client) acquired(l *Lock, res attemptResult, w *waiter, waitStart time.Time) {
	if !res.ours {
		l.data = res.data // the row kept data of its own
	}
	l.hold(res.rvn, res.start)
	c.waits.forget(l.name)
	if res.tookOver {
		c.stats.add(counterSteals, 1)
		c.log.Debug("took over a stale lock", "lock", l.name, "owner", c.owner, "rvn", res.rvn,
			"stale_rvn", res.stale.Int64, "lease", c.leaseDuration)
	}
	if w == nil {
		return
	}
	waited := time.Since(waitStart)
	c.stats.recordWait(waited)
	w.timed = true
	if at := w.notified.Load(); at != 0 {
		c.stats.recordHandoff(time.Duration(monoNow() - at))
	}
	c.log.Debug("waited for lock", "lock", l.name, "owner", c.owner, "rvn", res.rvn, "waited", waited)
}

// acquireError types the error of a failed attempt.
func (c *Client) acquireError(ctx context.Context, l *Lock, err error) error {
	if cerr := contextError(ctx, ErrNotAcquired); cerr != nil {
		return cerr
	}
	what := fmt.Sprintf("%q", l.name)
	if l.sem != nil {
		what = fmt.Sprintf("a permit of semaphore %q", l.sem.name)
	}
	return typeError(&notAcquiredError{fmt.Errorf("pglock: cannot acquire %s: %w", what, withPoolerHint(err))})
}

// awaitChance sleeps until l's row may be taken: a release of its name was
// announced, the watched RVN turns stale, or a poll finds the row free,
// released or stale. A waiter with data looks at the row with a plain read
// on a poll, so that its data goes to the server only with an attempt that
// can take the row; one without data attempts at once, which costs the same.
func (c *Client) awaitChance(ctx context.Context, w *waiter, l *Lock) error {
	for {
		polled, err := c.sleep(ctx, w, l.name)
		if err != nil || !polled || len(l.data) == 0 || !c.stillHeld(ctx, l.name) {
			return err
		}
	}
}

// stillHeld looks at name's row with a plain read, and reports whether it
// is held at an RVN not yet watched stale. On a failed read it reports
// false: the attempt that follows tells what went wrong.
func (c *Client) stillHeld(ctx context.Context, name string) bool {
	r, err := c.peek(ctx, name)
	if err != nil || !r.rvn.Valid {
		return false
	}
	now := c.clock.now()
	c.waits.observe(name, r.rvn.Int64, now)
	stale, _ := c.waits.stale(name, now)
	return !stale.Valid
}

// sleep waits until a release of name is announced, the watched RVN turns
// stale, the poll interval passes, or ctx ends. It reports whether it woke
// for the poll alone.
func (c *Client) sleep(ctx context.Context, w *waiter, name string) (polled bool, err error) {
	d := c.waits.pollInterval(w.polls == 0)
	w.polls++
	_, staleAt := c.waits.stale(name, c.clock.now())
	if !staleAt.IsZero() && staleAt.Sub(c.clock.now()) <= d {
		d = staleAt.Sub(c.clock.now())
	} else {
		staleAt = time.Time{}
	}
	woke, err := c.sleepFor(ctx, w, d)
	return staleAt.IsZero() && !woke && err == nil, err
}

// peek reads name's row (its RVN and owner) on the caller's pool, without
// sending anything else.
func (c *Client) peek(ctx context.Context, name string) (rowState, error) {
	var r rowState
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onOwn(ctx, func(ctx context.Context, q querier) error {
			var n string
			err := q.QueryRowContext(ctx, c.sql.reread, pq.StringArray{name}).Scan(&n, &r.rvn, &r.owner)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		})
	}, nil)
	return r, err
}

// tryAcquire sends the one acquire statement, on the caller's pool. A
// statement given up on when ctx ended, and that took the lock after all,
// has its row released as soon as it returns, so that nobody waits a lease
// for a lock nobody holds.
func (c *Client) tryAcquire(ctx context.Context, l *Lock, expected sql.NullInt64) (attemptResult, error) {
	var res attemptResult
	lane := c.keep.onPool
	if l.waiting {
		lane = c.keep.onOwn // a poll
	}
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			return lane(ctx, func(ctx context.Context, q querier) error {
				return onOneConn(ctx, q, func(q querier) error {
					var err error
					res, err = c.acquireRow(ctx, q, l, expected)
					return err
				})
			})
		})
	}, func(err error) {
		if err == nil && res.acquired {
			c.releaseOrphan(l, res)
		}
	})
	if err != nil {
		return attemptResult{}, err // a statement left behind may still write res
	}
	return res, nil
}

// acquireRow runs the acquire statement on q and reads its answer.
func (c *Client) acquireRow(ctx context.Context, q querier, l *Lock, expected sql.NullInt64) (attemptResult, error) {
	var (
		res    attemptResult
		holder sql.NullString
	)
	start := c.clock.now()
	if l.fair {
		return c.acquireQueuedRow(ctx, q, l, expected, start)
	}
	var row *sql.Row
	queue := c.fq.sql.table
	if l.announce {
		row = q.QueryRowContext(ctx, c.sql.acquireNotify, l.name, l.data, c.owner, l.replaceData, expected, c.sql.sequence, c.sql.channel, queue)
	} else {
		row = q.QueryRowContext(ctx, c.sql.acquire, l.name, l.data, c.owner, l.replaceData, expected, c.sql.sequence, queue)
	}
	var queued bool
	switch err := row.Scan(&res.acquired, &res.rvn, &res.data, &res.ours, &holder, &res.inserted, &res.tookOver, &queued); {
	case errors.Is(err, sql.ErrNoRows):
		return attemptResult{}, nil // inserted or released concurrently: not known
	case err != nil:
		return attemptResult{}, err
	}
	c.trip.Store(int64(c.clock.now().Sub(start)))
	res.known, res.holder = true, holder.String
	c.fq.found(queued)
	return res, nil
}

// releaseOrphan frees the row of a lock acquired by a statement its caller
// gave up on. A row the statement created is deleted, unless the lock keeps
// its row on release; a row that existed before (a kept row, a stale one
// taken over) is released keeping its data, so the cleanup destroys nothing
// the acquire did not create. It runs on the abandoned statement's
// goroutine, which the client's runner owns.
func (c *Client) releaseOrphan(l *Lock, res attemptResult) {
	c.releaseOrphanRow(l.name, l.keepOnRelease, res)
}

// releaseOrphanRow is releaseOrphan of the row name.
func (c *Client) releaseOrphanRow(name string, keepOnRelease bool, res attemptResult) {
	release, releaseKeep, _ := c.releaseSQL()
	query := release
	if keepOnRelease || !res.inserted {
		query = releaseKeep
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
	defer cancel()
	err := c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
		_, err := execAffected(ctx, q, query, name, res.rvn, c.sql.channel, c.owner)
		return err
	})
	if err != nil {
		c.log.Debug("cannot release a lock acquired after its caller gave up; it expires after a lease", "lock", name, "error", err)
	}
}
