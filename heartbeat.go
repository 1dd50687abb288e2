package pglock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// maxHeartbeatBatch is how many locks one heartbeat statement refreshes.
const maxHeartbeatBatch = 1000

// maxParallelBeats is how many batch statements of one tick may be in
// flight at once, when a client holds more than maxHeartbeatBatch locks: a
// tick then lasts about as long as its slowest batch, not their sum.
const maxParallelBeats = 4

// heartbeater keeps every lock a Client holds alive with one goroutine. Each
// tick refreshes all of them in batches of maxHeartbeatBatch, one statement
// per batch. The goroutine runs only while the client holds locks: the last
// lock's removal tells it to stop, without waiting for it, and Client.Close
// joins it.
type heartbeater struct {
	c *Client

	mu     sync.Mutex
	locks  map[*Lock]struct{}
	gen    *generation    // the running goroutine; nil while none runs
	gens   sync.WaitGroup // every generation's goroutine, for Close
	manual bool           // ticks are driven by tests: no goroutine
}

// generation is one run of the heartbeat goroutine, from the first lock
// held to the last released.
type generation struct {
	stop context.CancelFunc
	// waiting counts this generation's heartbeats of guarded locks (see
	// waitForGuarded); the goroutine waits for them before it exits.
	waiting sync.WaitGroup
}

func newHeartbeater(c *Client) *heartbeater {
	return &heartbeater{c: c, locks: make(map[*Lock]struct{})}
}

// add starts heartbeating l, and the goroutine if none runs.
func (h *heartbeater) add(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l.IsReleased() {
		return
	}
	h.locks[l] = struct{}{}
	if len(h.locks) == 1 {
		h.c.keep.hold()
	}
	if h.gen != nil || h.manual {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &generation{stop: cancel}
	h.gen = g
	h.gens.Add(1)
	go func() {
		defer h.gens.Done()
		h.run(ctx, g)
	}()
}

// remove stops heartbeating l. When l was the last lock it tells the
// goroutine to stop, and lets go of the client's own connections.
func (h *heartbeater) remove(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(l)
}

// dropLocked is remove with h.mu held.
func (h *heartbeater) dropLocked(l *Lock) {
	if _, ok := h.locks[l]; !ok {
		return
	}
	delete(h.locks, l)
	if len(h.locks) > 0 {
		return
	}
	h.c.keep.letGo()
	if h.gen != nil {
		h.gen.stop()
		h.gen = nil
	}
}

// close stops heartbeating every lock, for Client.Close.
func (h *heartbeater) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l := range h.locks {
		h.dropLocked(l)
	}
	if h.gen != nil {
		h.gen.stop()
		h.gen = nil
	}
	h.manual = true // nothing starts a goroutine any more
}

// run ticks until ctx is cancelled or no lock is left to heartbeat. After a
// failed tick it retries sooner, so a short outage costs little of the
// lease.
func (h *heartbeater) run(ctx context.Context, g *generation) {
	defer g.waiting.Wait()
	freq := h.c.heartbeatFrequency
	retry := max(freq/4, 10*time.Millisecond)
	t := time.NewTimer(freq)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		batch := h.snapshot(g)
		if len(batch) == 0 {
			return
		}
		next := freq
		if !h.beatAll(ctx, g, batch) {
			next = retry
		}
		t.Reset(next)
	}
}

// tick refreshes every held lock once, on the calling goroutine. It is the
// heartbeat the tests drive when the heartbeater is manual.
func (h *heartbeater) tick() bool {
	g := &generation{stop: func() {}}
	defer g.waiting.Wait()
	return h.beatAll(context.Background(), g, h.snapshot(nil))
}

// snapshot returns the locks to refresh now, dropping those that ended or
// whose heartbeat context ended. When none is left, generation g (if it is
// still the running one) is over.
func (h *heartbeater) snapshot(g *generation) []*Lock {
	h.mu.Lock()
	defer h.mu.Unlock()
	batch := make([]*Lock, 0, len(h.locks))
	for l := range h.locks {
		if l.IsReleased() || l.heartbeatContext.Err() != nil {
			h.dropLocked(l)
			continue
		}
		batch = append(batch, l)
	}
	if len(batch) == 0 && g != nil && h.gen == g {
		h.gen = nil
	}
	return batch
}

// beatAll refreshes batch in statements of maxHeartbeatBatch locks, up to
// maxParallelBeats at once, and returns when all are done. It reports
// whether every statement succeeded.
func (h *heartbeater) beatAll(ctx context.Context, g *generation, batch []*Lock) bool {
	if len(batch) <= maxHeartbeatBatch {
		return h.beat(ctx, g, batch)
	}
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
		slots  = make(chan struct{}, maxParallelBeats)
	)
	for i := 0; i < len(batch); i += maxHeartbeatBatch {
		part := batch[i:min(i+maxHeartbeatBatch, len(batch))]
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if !h.beat(ctx, g, part) {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

// beatRow is one lock's answer to a batch heartbeat.
type beatRow struct {
	l       *Lock
	newRVN  sql.NullInt64 // NULL: not bumped
	present bool          // the row still had the RVN sent
}

// beat refreshes one batch in one statement. Locks busy with a release, a
// Guard check or another heartbeat are left for the next tick. The answers
// are applied only once the statement, its commit included, succeeded:
// rows streamed by a transaction that then rolled back say nothing. It
// reports whether the statement succeeded.
func (h *heartbeater) beat(runCtx context.Context, g *generation, locks []*Lock) bool {
	c := h.c
	taken := takeOps(locks)
	if len(taken) == 0 {
		return true
	}
	handedOff := map[*Lock]bool{}
	defer func() {
		for _, l := range taken {
			if !handedOff[l] {
				l.op.unlock()
			}
		}
	}()
	start := c.clock.now()
	rows, err := c.beatStatement(taken)
	if err != nil {
		c.stats.add(counterHeartbeatFailures, 1)
		c.log.Debug("heartbeat failed", "locks", len(taken), "error", err, "elapsed", c.clock.now().Sub(start))
		markUnknown(taken, start, err)
		return false
	}
	c.trip.Store(int64(c.clock.now().Sub(start)))
	var recheck, skipped []*Lock
	var refreshed int64
	for _, r := range rows {
		switch {
		case r.newRVN.Valid:
			if r.l.refresh(r.newRVN.Int64, start) {
				refreshed++
			}
		case !r.present && !r.l.unsettledSince().IsZero():
			recheck = append(recheck, r.l) // maybe a statement of unknown outcome moved it
		case !r.present:
			r.l.end(errStolen)
		default:
			skipped = append(skipped, r.l) // an open Guard transaction holds the row
		}
	}
	c.stats.add(counterHeartbeats, refreshed)
	c.resettle(recheck)
	for _, l := range h.waitForGuarded(runCtx, g, skipped) {
		handedOff[l] = true
	}
	return true
}

// takeOps takes the op lock of every lock of locks that is free and still
// held, and returns those.
func takeOps(locks []*Lock) []*Lock {
	taken := make([]*Lock, 0, len(locks))
	for _, l := range locks {
		if !l.op.tryLock() {
			continue
		}
		if _, ended := l.state(); ended {
			l.op.unlock()
			continue
		}
		taken = append(taken, l)
	}
	return taken
}

// beatStatement sends one batch heartbeat for locks (their op locks held)
// on the client's own connection and returns its answers, all of them or
// none.
func (c *Client) beatStatement(locks []*Lock) ([]beatRow, error) {
	type key struct {
		name string
		rvn  int64
	}
	byKey := make(map[key]*Lock, len(locks))
	names := make(pq.StringArray, 0, len(locks))
	rvns := make(pq.Int64Array, 0, len(locks))
	var expires time.Time // the first lease of the batch to run out
	for _, l := range locks {
		held, _ := l.state()
		byKey[key{l.name, held.rvn}] = l
		names = append(names, l.name)
		rvns = append(rvns, held.rvn)
		if end := held.at.Add(c.holdFor()); expires.IsZero() || end.Before(expires) {
			expires = end
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.beatTimeout(expires))
	defer cancel()
	var rows []beatRow
	err := c.keep.run(ctx, func(ctx context.Context, q querier) error {
		return retry(ctx, c.log, func() error {
			rows = rows[:0]
			return eachRow(ctx, q, func(r *sql.Rows) error {
				var (
					k   key
					row beatRow
				)
				if err := r.Scan(&k.name, &k.rvn, &row.newRVN, &row.present); err != nil {
					return err
				}
				if row.l = byKey[k]; row.l != nil {
					rows = append(rows, row)
				}
				return nil
			}, c.sql.heartbeatBatch, names, rvns, c.sql.sequence, c.owner)
		})
	})
	if err != nil {
		return nil, err // a statement left behind may still be writing rows
	}
	return rows, nil
}

// attemptTimeout bounds one try of a read-back or a release's DELETE. A
// statement that has not returned by then is given up (its connection may
// be dead while the database is fine) and the next try goes out on another
// connection. It is a quarter lease, and on a slow network at least twice
// the latest answered statement's time (up to a lease), as beatTimeout.
func (c *Client) attemptTimeout() time.Duration {
	return max(c.leaseDuration/4, min(2*time.Duration(c.trip.Load()), c.leaseDuration))
}

// beatTimeout bounds one try of a background heartbeat whose first lock
// expires at expires: half the time left until then, and at least an
// eighth of a lease, so that a dead connection is given up early enough for
// the next try, on another connection, to land within the lease. On a slow
// network it is at least twice the latest answered statement's time (up to
// the time left): a try that cannot get an answer in time would only end
// the connection it set up.
func (c *Client) beatTimeout(expires time.Time) time.Duration {
	left := expires.Sub(c.clock.now())
	return max(left/2, c.leaseDuration/8, min(2*time.Duration(c.trip.Load()), left))
}

// waitForGuarded refreshes the locks a batch skipped because an open Guard
// transaction held their row, once half their lease will have passed since
// their last refresh by the next tick: it sends each a heartbeat that waits
// for the row, so a holder that keeps guarded transactions open back to
// back does not lose its lock. Each such heartbeat runs in its own
// goroutine, owned by the generation (its goroutine joins them before it
// exits), and waits at most until the lock would expire. It takes over the
// lock's op lock from beat and unlocks it when done, so new Guard calls on
// the lock wait for it, and later ticks skip the lock meanwhile. It returns
// the locks it took over.
func (h *heartbeater) waitForGuarded(runCtx context.Context, g *generation, skipped []*Lock) []*Lock {
	c := h.c
	var taken []*Lock
	for _, l := range skipped {
		held, _ := l.state()
		if c.clock.now().Sub(held.at)+c.heartbeatFrequency <= c.leaseDuration/2 {
			continue
		}
		taken = append(taken, l)
		g.waiting.Add(1)
		go func() {
			defer g.waiting.Done()
			defer l.op.unlock()
			ctx, cancel := context.WithTimeout(runCtx, held.at.Add(c.holdFor()).Sub(c.clock.now()))
			defer cancel()
			if err := c.heartbeatOne(ctx, l); err != nil {
				c.log.Debug("heartbeat of a guarded lock failed", "lock", l.name, "error", err)
			}
		}()
	}
	return taken
}

// heartbeatOne bumps the RVN of l once (its op lock held), waiting for its
// row if a guarded transaction holds it, at most until ctx ends.
func (c *Client) heartbeatOne(ctx context.Context, l *Lock) error {
	held, ended := l.state()
	if ended {
		return l.Err()
	}
	start := c.clock.now()
	var newRVN int64
	err := c.keep.runWarm(ctx, func(ctx context.Context, q querier) error {
		return retry(ctx, c.log, func() error {
			return q.QueryRowContext(ctx, c.sql.heartbeat, l.name, held.rvn, c.sql.sequence, l.owner).Scan(&newRVN)
		})
	})
	switch {
	case err == nil:
		if !l.refresh(newRVN, start) {
			return l.Err()
		}
		c.stats.add(counterHeartbeats, 1)
		return nil
	case errors.Is(err, sql.ErrNoRows):
		stillHeld, merr := c.moved(ctx, l)
		switch {
		case merr != nil:
			return fmt.Errorf("pglock: heartbeat of %q: %w", l.name, merr)
		case !stillHeld:
			return &OtherError{errStolen}
		}
		return nil // an earlier statement of ours had moved it
	}
	c.stats.add(counterHeartbeatFailures, 1)
	if markUnknown([]*Lock{l}, start, err) {
		c.readBack(ctx, []*Lock{l})
	}
	return typeError(fmt.Errorf("pglock: heartbeat of %q: %w", l.name, err))
}
