package pglock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// The fair queue orders waiters across clients. A waiting Acquire inserts
// an entry, (name, ticket), into the table's <table>_queue; its ticket is
// drawn from the table's RVN sequence, so tickets grow in the order the
// entries commit. A waiter takes a free, released or stale row only when no
// other client's entry has a lower ticket than its client's lowest one (its
// place); within a client, its waiters keep their own first come, first
// served order (wait.go).
//
// Entries live the way locks do: the client's queue head draws its
// entries a new RVN on each of its polls (one statement a quarter lease),
// and a waiter that sees an entry ahead keep one RVN for a place lease, on
// its own monotonic clock, deletes it and goes ahead of it. No clock is
// stored.
//
// A release by a client that knows of the queue (it learns with its first
// acquire) notifies the lowest ticket queued for the name: it wakes every
// waiting client, but only the first in line tries, so a handoff costs the
// release and one attempt, however many wait. Clients that know nothing of the queue (the original
// library, FailIfLocked, semaphores) take free rows as before, and never
// two at once: the row decides who holds, the queue only who tries.

// placeLease is how long an entry's RVN must stay unchanged before a waiter
// behind it takes it for dead: three tenths of a lease, a little more than
// the quarter lease between the polls that keep entries alive.
func (c *Client) placeLease() time.Duration { return c.leaseDuration * 3 / 10 }

// fairQueue is a client's view of its table's queue.
type fairQueue struct {
	sql   queueStatements
	id    string       // this client's entries' client column
	state atomic.Int32 // queueUnknown, queuePresent or queueAbsent
	note  sync.Once    // logs once that the table has no queue
	none  bool         // the table's name leaves no room for a queue's
	// joined is set once a wait of this client sent a join: Close deletes
	// the client's entries (queue_leave.go).
	joined atomic.Bool
	litter litter // names whose entries a delete failed to remove
}

const (
	queueUnknown int32 = iota
	queuePresent
	queueAbsent
)

// found records what an acquire statement told of the queue.
func (q *fairQueue) found(exists bool) {
	if exists && !q.none {
		q.state.Store(queuePresent)
	} else {
		q.state.Store(queueAbsent)
	}
}

// releaseSQL returns the release statements to send: the queue's, whose
// notification names the first in line, once the queue is known to exist.
func (c *Client) releaseSQL() (release, releaseKeep, forceRelease string) {
	if c.fq.state.Load() == queuePresent {
		return c.fq.sql.release, c.fq.sql.releaseKeep, c.fq.sql.forceRelease
	}
	return c.sql.release, c.sql.releaseKeep, c.sql.forceRelease
}

// init sets q up for the table id, with a random client id.
func (q *fairQueue) init(id identifier) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	q.sql, q.id = newQueueStatements(id), hex.EncodeToString(b[:])
	q.none = !hasQueueName(id)
	if q.none {
		q.state.Store(queueAbsent)
	}
}

// hasQueueName reports whether id's queue gets a name of its own: a table
// name of 60 bytes or more leaves none once PostgreSQL cuts the names at
// 63 bytes, and waiters on it race, as in the original.
func hasQueueName(id identifier) bool {
	q := id.queue().name
	return q != id.name && q != id.sequence().name
}

// noQueueLog tells how to give a table made without a queue its queue.
const noQueueLog = "the lock table has no fair queue: waiters of different clients race for a released lock; " +
	"`pglock init` (or TryCreateTable) adds it without downtime"

// fair reports whether l's waits go through the queue: a waiting Acquire
// of a lock, on a table with a queue. The first call looks the queue up
// (one statement per client); a failed look-up is tried again later.
func (c *Client) fair(ctx context.Context, l *Lock) bool {
	if l.failIfLocked || l.sem != nil || c.fq.none {
		return false
	}
	switch c.fq.state.Load() {
	case queuePresent:
		return true
	case queueAbsent:
		c.fq.note.Do(func() { c.log.Info(noQueueLog, "table", c.table.quoted()) })
		return false
	}
	var ok bool
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			return q.QueryRowContext(ctx, c.fq.sql.exists, c.fq.sql.table).Scan(&ok)
		})
	}, nil)
	switch {
	case err != nil:
		return false
	case ok:
		c.fq.state.Store(queuePresent)
	default:
		c.fq.state.Store(queueAbsent)
		c.fq.note.Do(func() { c.log.Info(noQueueLog, "table", c.table.quoted()) })
	}
	return ok
}

// queueSeat is what a waiter knows of the queue. It belongs to the
// waiting goroutine; its ticket is written under waitRoom.mu.
type queueSeat struct {
	ticket int64 // its entry's ticket; 0 while it has none
	// ahead is what the last look saw of other clients' entries ahead of
	// this client's place, in ticket order.
	ahead []placeSighting
	// row is the lock row's state at the last look.
	row rowState
	// mustLook is set when w knows nothing of the queue yet, or an attempt
	// found entries ahead that ahead does not know of: the next sleep
	// looks at once.
	mustLook bool
	// unsure is set once a join of w failed: it may have committed all
	// the same, so that when w's wait ends it deletes every entry of its
	// client for the name that no live wait holds.
	unsure bool
}

// placeSighting is an entry seen ahead, and when its RVN was first seen.
type placeSighting struct {
	ticket, rvn int64
	first       time.Time
}

// joinQueue inserts w's entry. Without one, w counts every entry ahead of
// it, and its next look tries again.
func (c *Client) joinQueue(ctx context.Context, w *waiter) {
	c.fq.joined.Store(true)
	var ticket int64
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onOwn(ctx, func(ctx context.Context, q querier) error {
			return q.QueryRowContext(ctx, c.fq.sql.join, w.name, c.fq.id, c.sql.sequence).Scan(&ticket)
		})
	}, func(error) { c.deleteStray(w.name) }) // it may have joined after the caller gave up
	if err != nil {
		w.seat.unsure = true
		c.log.Debug("cannot join the lock's queue; trying again on the next look", "lock", w.name, "error", err)
		return
	}
	c.waits.seat(w, ticket)
}

// dead returns the entries of w's last look whose RVN stayed the same for
// a place lease by now, as the tickets and RVNs the statements take.
func (c *Client) dead(w *waiter, now time.Time) (tickets, rvns pq.Int64Array) {
	tickets, rvns = pq.Int64Array{}, pq.Int64Array{}
	for _, p := range w.seat.ahead {
		if now.Sub(p.first) >= c.placeLease() {
			tickets, rvns = append(tickets, p.ticket), append(rvns, p.rvn)
		}
	}
	return tickets, rvns
}

// firstInLine reports whether every entry w last saw ahead is dead by now.
func (c *Client) firstInLine(w *waiter, now time.Time) bool {
	for _, p := range w.seat.ahead {
		if now.Sub(p.first) < c.placeLease() {
			return false
		}
	}
	return true
}

// look sends the queue's look for w's name: it keeps this client's
// entries alive, deletes those w saw dead, and records what is ahead and
// the lock row's state. A head whose own entry is gone (it was taken for
// dead while this process was paused) joins again, at the back. It
// reports whether the look was answered.
func (c *Client) look(ctx context.Context, w *waiter) bool {
	now := c.clock.now()
	mine := c.waits.tickets(w.name)
	skipT, skipR := c.dead(w, now)
	place := sql.NullInt64{}
	if len(mine) > 0 {
		place = sql.NullInt64{Int64: mine[0], Valid: true}
	}
	var (
		kept, aheadT, aheadR pq.Int64Array
		row                  rowState
	)
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onOwn(ctx, func(ctx context.Context, q querier) error {
			return q.QueryRowContext(ctx, c.fq.sql.look, w.name, c.fq.id, place, pq.Int64Array(mine), skipT, skipR,
				c.sql.sequence).Scan(&kept, &aheadT, &aheadR, &row.rvn, &row.owner)
		})
	}, nil)
	// The entries' new RVNs may have been drawn as soon as the look began,
	// and what it read may have been written just before it returned: the
	// next look counts from its start, the sightings from its end.
	seen := c.clock.now()
	c.waits.looked(w.name, now)
	if err != nil {
		c.log.Debug("cannot look at the lock's queue", "lock", w.name, "error", err)
		return false
	}
	w.seat.ahead = c.sighted(w.seat.ahead, aheadT, aheadR, seen)
	w.seat.row, w.seat.mustLook = row, false
	if row.rvn.Valid {
		c.waits.observe(w.name, row.rvn.Int64, seen)
	}
	if w.seat.ticket == 0 || !contains(kept, w.seat.ticket) {
		c.waits.unseat(w)
		c.joinQueue(ctx, w)
	}
	return true
}

// sighted merges the entries a look saw ahead with those seen before: an
// entry keeps its first sighting while its RVN stays the same.
func (c *Client) sighted(before []placeSighting, tickets, rvns []int64, now time.Time) []placeSighting {
	ahead := make([]placeSighting, 0, len(tickets))
	for i, t := range tickets {
		p := placeSighting{ticket: t, rvn: rvns[i], first: now}
		for _, b := range before {
			if b.ticket == t && b.rvn == rvns[i] {
				p.first = b.first
			}
		}
		ahead = append(ahead, p)
	}
	return ahead
}

func contains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// heard applies the latest release notification of w's name to w's view:
// entries ahead of the lowest ticket still queued have left.
func (c *Client) heard(w *waiter) {
	next := c.waits.takeNext(w.name)
	if next == 0 {
		return
	}
	kept := w.seat.ahead[:0]
	for _, p := range w.seat.ahead {
		if p.ticket >= next {
			kept = append(kept, p)
		}
	}
	w.seat.ahead = kept
}

// parsePayload reads a notification: a name alone, or a release that also
// names the lowest ticket queued for it (queueNotify): the record
// separator, the ticket, the separator and the name. next is that ticket,
// or 0. Anything else is a name.
func parsePayload(payload string) (name string, next int64) {
	rest, ok := strings.CutPrefix(payload, "\x1e")
	if !ok {
		return payload, 0
	}
	t, name, ok := strings.Cut(rest, "\x1e")
	if !ok {
		return payload, 0
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return payload, 0
	}
	return name, n
}

// awaitQueued sleeps until w may take l's row: a release notification
// finds w's client first in line, or a look finds it first in line with
// the row free, released or stale. A waiter without data that is first in
// line attempts instead of looking: its attempt keeps the entries alive as
// a look does, and costs the same.
func (c *Client) awaitQueued(ctx context.Context, w *waiter, l *Lock) error {
	for {
		woke, err := c.sleepQueued(ctx, w)
		if err != nil {
			return err
		}
		if woke {
			c.heard(w)
			if c.firstInLine(w, c.clock.now()) {
				return nil
			}
			continue
		}
		if len(l.data) == 0 && !w.seat.mustLook && c.firstInLine(w, c.clock.now()) {
			c.waits.looked(w.name, c.clock.now())
			return nil
		}
		if answered := c.look(ctx, w); !answered || c.mayTake(w) {
			return nil // on a failed look, the attempt tells what went wrong
		}
	}
}

// mayTake reports whether the last look found w first in line, and the row
// free, released or watched stale.
func (c *Client) mayTake(w *waiter) bool {
	now := c.clock.now()
	if !c.firstInLine(w, now) {
		return false
	}
	if !w.seat.row.rvn.Valid {
		return true
	}
	stale, _ := c.waits.stale(w.name, now)
	return stale.Valid
}

// sleepQueued waits until a release of w's name is announced (woke), or
// until it is time to look: the client's next look at the name, or sooner
// when the entries ahead will be dead and the row free or stale by then.
func (c *Client) sleepQueued(ctx context.Context, w *waiter) (woke bool, err error) {
	now := c.clock.now()
	d := c.waits.untilLook(w.name, now)
	if w.seat.mustLook {
		d = 0
	}
	if at := c.takeAt(w); !at.IsZero() && at.Sub(now) < d {
		d = at.Sub(now)
	}
	return c.sleepFor(ctx, w, d)
}

// takeAt is when w could take the row by what its last look saw: once the
// entries ahead are dead, and the row free or its RVN stale. It is zero
// when the row's holder is not watched.
func (c *Client) takeAt(w *waiter) time.Time {
	var at time.Time
	for _, p := range w.seat.ahead {
		if d := p.first.Add(c.placeLease()); d.After(at) {
			at = d
		}
	}
	if !w.seat.row.rvn.Valid {
		return at
	}
	_, staleAt := c.waits.stale(w.name, c.clock.now())
	if staleAt.IsZero() {
		return time.Time{}
	}
	if staleAt.After(at) {
		at = staleAt
	}
	return at
}

// seat joins w to the table's fair queue when l's waits go through it.
func (c *Client) seat(ctx context.Context, l *Lock, w *waiter) {
	if l.fair = c.fair(ctx, l); !l.fair {
		return
	}
	l.seat = w
	c.joinQueue(ctx, w)
}

// acquireQueuedRow runs the fair queue's acquire statement for l on q and
// reads its answer. Before l waits, every entry of another client is ahead
// of it; once it waits, those before its client's place are, less those it
// saw dead. A lock taken this way took its waiter's entry out of the queue.
func (c *Client) acquireQueuedRow(ctx context.Context, q querier, l *Lock, expected sql.NullInt64, start time.Time) (attemptResult, error) {
	var (
		place, mine sql.NullInt64
		skipT       = pq.Int64Array{}
		skipR       = pq.Int64Array{}
		ours        = pq.Int64Array{}
	)
	if w := l.seat; w != nil {
		if ts := c.waits.tickets(w.name); len(ts) > 0 {
			place, ours = sql.NullInt64{Int64: ts[0], Valid: true}, ts
		}
		if t := c.waits.ticketOf(w); t != 0 {
			mine = sql.NullInt64{Int64: t, Valid: true}
		}
		skipT, skipR = c.dead(w, start)
	}
	args := []any{l.name, l.data, c.owner, l.replaceData, expected, c.sql.sequence, c.fq.id, place, mine, skipT, skipR, ours}
	query := c.fq.sql.acquire
	if l.announce {
		query, args = c.fq.sql.acquireNotify, append(args, c.sql.channel)
	}
	var (
		res    attemptResult
		holder sql.NullString
	)
	var seated bool
	err := q.QueryRowContext(ctx, query, args...).Scan(&res.acquired, &res.rvn, &res.data, &res.ours, &holder,
		&res.inserted, &res.tookOver, &res.queued, &seated)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return attemptResult{}, nil // inserted or released concurrently: not known
	case err != nil:
		return attemptResult{}, err
	}
	c.trip.Store(int64(c.clock.now().Sub(start)))
	res.known, res.holder = holder.Valid || res.acquired, holder.String
	if res.acquired && l.seat != nil && mine.Valid {
		c.waits.unseat(l.seat)
	}
	res.unseated = l.seat != nil && !seated
	return res, nil
}

// rejoin joins w again when its last attempt found its entry gone: a
// waiter behind took it for dead while this process was paused, or w
// could not join before.
func (c *Client) rejoin(ctx context.Context, w *waiter, res attemptResult) {
	if !res.unseated || res.acquired {
		return
	}
	c.waits.unseat(w)
	c.joinQueue(ctx, w)
}
