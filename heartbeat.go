package pglock

import (
	"context"
	"database/sql"
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
// Release stops it and waits for it to exit.
type heartbeater struct {
	c *Client

	mu    sync.Mutex
	locks map[*Lock]struct{}
	stop  context.CancelFunc // nil while no goroutine runs
	done  chan struct{}      // closed when the goroutine has exited

	// waiting counts the heartbeats of guarded locks that wait for their
	// row (see waitForGuarded); run waits for them before it exits.
	waiting sync.WaitGroup
}

// heartbeatKey is a lock's name and RVN as sent to a heartbeat statement.
type heartbeatKey struct {
	name string
	rvn  int64
}

// heldAt is a lock's RVN and when the statement that set it began.
type heldAt struct {
	rvn int64
	at  time.Time
}

func newHeartbeater(c *Client) *heartbeater {
	return &heartbeater{c: c, locks: make(map[*Lock]struct{})}
}

// add starts heartbeating l, and the goroutine if it is not running.
func (h *heartbeater) add(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l.IsReleased() {
		return
	}
	h.locks[l] = struct{}{}
	if h.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		h.stop, h.done = cancel, make(chan struct{})
		go h.run(ctx, h.done)
	}
}

// remove stops heartbeating l. When l was the last lock it stops the
// goroutine and waits for it to exit.
func (h *heartbeater) remove(l *Lock) {
	h.mu.Lock()
	delete(h.locks, l)
	var done chan struct{}
	if len(h.locks) == 0 && h.stop != nil {
		h.stop()
		done = h.done
		h.stop, h.done = nil, nil
	}
	h.mu.Unlock()
	if done != nil {
		<-done
	}
}

// run ticks until ctx is cancelled or no lock is left to heartbeat. After a
// failed tick it retries sooner, so a short outage costs little of the lease.
func (h *heartbeater) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	defer h.waiting.Wait()
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
		batch, last := h.snapshot(done)
		if last {
			return
		}
		next := freq
		if !h.beatAll(ctx, batch) {
			next = retry
		}
		t.Reset(next)
	}
}

// beatAll refreshes batch in statements of maxHeartbeatBatch locks, up to
// maxParallelBeats at once, and returns when all are done. It reports
// whether every statement succeeded.
func (h *heartbeater) beatAll(ctx context.Context, batch []*Lock) bool {
	if len(batch) <= maxHeartbeatBatch {
		return h.beat(ctx, batch)
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
			if !h.beat(ctx, part) {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

// snapshot returns the locks to refresh now, dropping those that ended or
// whose heartbeat context ended. last is true when none is left: the
// goroutine then deregisters itself and must exit.
func (h *heartbeater) snapshot(done chan struct{}) (batch []*Lock, last bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l := range h.locks {
		if l.IsReleased() || l.heartbeatContext.Err() != nil {
			delete(h.locks, l)
			continue
		}
		batch = append(batch, l)
	}
	if len(batch) == 0 && h.done == done {
		h.stop()
		h.stop, h.done = nil, nil
		return nil, true
	}
	return batch, false
}

// beat refreshes one batch in one statement. Locks busy with a release or a
// Guard check are left for the next tick. It reports whether the statement
// succeeded.
func (h *heartbeater) beat(runCtx context.Context, locks []*Lock) bool {
	c := h.c
	held := make([]*Lock, 0, len(locks))
	prev := make(map[*Lock]heldAt, len(locks))
	type key = heartbeatKey
	byKey := make(map[key]*Lock, len(locks))
	names := make(pq.StringArray, 0, len(locks))
	rvns := make(pq.Int64Array, 0, len(locks))
	var expires time.Time // the earliest lease end in the batch
	for _, l := range locks {
		if !l.opMu.TryLock() {
			continue
		}
		rvn, at, ended := l.state()
		if ended {
			l.opMu.Unlock()
			continue
		}
		held = append(held, l)
		if end := at.Add(c.leaseDuration); expires.IsZero() || end.Before(expires) {
			expires = end
		}
		prev[l] = heldAt{rvn, at}
		byKey[key{l.name, rvn}] = l
		names = append(names, l.name)
		rvns = append(rvns, rvn)
	}
	var handedOff map[*Lock]bool
	defer func() {
		for _, l := range held {
			if handedOff[l] {
				continue // its waiting heartbeat unlocks it
			}
			l.opMu.Unlock()
		}
	}()
	if len(held) == 0 {
		return true
	}

	// A slow heartbeat that lands within the lease is worth more than one
	// cancelled early: cancelling costs a retry and leaves the outcome
	// unknown. So the statement may run until the first lock of the batch
	// would expire, and at least one heartbeat period. It is not cancelled
	// when the goroutine is told to stop either: a Release waiting for it
	// wants its outcome known, not made unknown.
	ctx, cancel := context.WithTimeout(context.Background(), max(time.Until(expires), c.heartbeatFrequency))
	defer cancel()
	start := time.Now()
	var (
		refreshed int64
		recheck   []*Lock
	)
	err := c.retry(ctx, func() error {
		refreshed = 0
		recheck = recheck[:0]
		return c.eachRow(ctx, func(rows *sql.Rows) error {
			var (
				k       key
				newRVN  sql.NullInt64
				present bool
			)
			if err := rows.Scan(&k.name, &k.rvn, &newRVN, &present); err != nil {
				return err
			}
			l := byKey[k]
			switch {
			case l == nil:
			case newRVN.Valid:
				l.refresh(newRVN.Int64, start)
				delete(byKey, k)
				refreshed++
			case !present && !l.unsettledSince().IsZero():
				// Maybe an earlier heartbeat of unknown outcome moved it.
				recheck = append(recheck, l)
				delete(byKey, k)
			case !present:
				l.end(errStolen)
				delete(byKey, k)
			}
			return nil
		}, c.sql.heartbeatBatch, names, rvns)
	})
	if err == nil {
		c.stats.heartbeats.Add(refreshed)
		c.resettle(recheck, prev)
		handedOff = h.waitForGuarded(runCtx, byKey, prev)
		return true
	}
	c.stats.heartbeatFailures.Add(1)
	c.log.Debug("heartbeat failed", "locks", len(held), "error", err, "elapsed", time.Since(start))
	pending := make([]*Lock, 0, len(byKey))
	for _, l := range byKey {
		pending = append(pending, l)
	}
	sctx, scancel := context.WithTimeout(context.Background(), max(time.Until(expires), c.heartbeatFrequency))
	defer scancel()
	c.settle(sctx, pending, prev, start)
	return false
}

// waitForGuarded refreshes the locks the batch skipped because an open
// Guard transaction held their row, once half their lease will have passed
// since their last refresh by the next tick: it sends each a heartbeat that
// waits for the row, so a holder that keeps guarded transactions open back
// to back does not lose its lock. Each such heartbeat runs in its own
// goroutine, owned by the heartbeater (run joins them before it exits),
// and waits at most until the lock would expire. It takes over the lock's
// opMu from beat and unlocks it when done, so new Guard calls on the lock
// wait for it, and later ticks skip the lock meanwhile. It returns the
// locks it took over.
func (h *heartbeater) waitForGuarded(runCtx context.Context, skipped map[heartbeatKey]*Lock, prev map[*Lock]heldAt) map[*Lock]bool {
	c := h.c
	var taken map[*Lock]bool
	for _, l := range skipped {
		p := prev[l]
		if time.Since(p.at)+c.heartbeatFrequency <= c.leaseDuration/2 {
			continue
		}
		if taken == nil {
			taken = make(map[*Lock]bool)
		}
		taken[l] = true
		h.waiting.Add(1)
		go func() {
			defer h.waiting.Done()
			defer l.opMu.Unlock()
			ctx, cancel := context.WithDeadline(runCtx, p.at.Add(c.holdFor()))
			defer cancel()
			if err := c.heartbeatOne(ctx, l, p); err != nil {
				c.log.Debug("heartbeat of a guarded lock failed", "lock", l.name, "error", err)
			}
		}()
	}
	return taken
}

// settle decides the fate of locks whose heartbeat, begun at start, failed
// with an unknown outcome: the UPDATE may have committed before the error,
// or may still commit after it (a statement the client gave up on). It marks
// the locks unsettled (see unsettled.go) until a heartbeat of theirs
// succeeds, and reads the rows back; decide then tells from each row whether
// the lock is still held. When the read fails it returns false and nothing
// else changes: the lease expiry still ends the locks in time if nothing
// settles them before.
func (c *Client) settle(ctx context.Context, locks []*Lock, prev map[*Lock]heldAt, start time.Time) (read bool) {
	if len(locks) == 0 {
		return true
	}
	names := make(pq.StringArray, len(locks))
	for i, l := range locks {
		names[i] = l.name
	}
	// A statement given up by the client (timeout, cancel) may still
	// commit after the read: the locks stay unsettled until a heartbeat
	// of theirs succeeds.
	for _, l := range locks {
		l.markUnsettled(start)
	}
	current := make(map[string]rowState, len(locks))
	err := c.retry(ctx, func() error {
		return c.eachRow(ctx, func(rows *sql.Rows) error {
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
	if err != nil {
		c.log.Debug("cannot settle heartbeat outcome", "locks", len(locks), "error", err)
		return false
	}
	readEnd := time.Now()
	for _, l := range locks {
		c.decide(l, prev[l], current[l.name], readEnd, start)
	}
	return true
}
