package pglock

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Polling of waiters. Notifications wake a waiter at once; polling catches
// what they miss: releases by clients that do not notify (the original
// library), holders that died (whose RVN a waiter must watch unchanged for
// a lease), and releases while no listener could be had.
//
// While notifications arrive, a queue head looks once every quarter lease:
// 4 statements per lease, whatever the lease, and a release by a client
// that does not notify is found within a quarter lease, a dead holder taken
// over within a lease and a quarter of its last heartbeat. Each wait starts
// at a random phase of that period, so a fleet's waiters do not look in
// step. Without notifications, it looks every pollWithoutListener (at most
// 4 statements a second), or every quarter lease when that is shorter.
const (
	pollWithoutListener = 250 * time.Millisecond
	listenerSetupWait   = 250 * time.Millisecond
)

// maxWatched bounds how many names a Client remembers an RVN for.
var maxWatched = 10000

// waitRoom is where a Client's waiters queue, one FIFO per lock name, and
// where release notifications reach them. Only the head of each queue sends
// statements; the others wait their turn, so one client never starves its
// own goroutines and a release costs one statement per waiting client.
// While anyone waits, a listener (listen.go) turns release notifications
// into wake-ups.
type waitRoom struct {
	c *Client

	mu      sync.Mutex
	queues  map[string][]*waiter
	watched map[string]sighting
	watches map[string]*watch // election observers' shared readers (watch.go)
	// looks is when the client last looked at each name's queue: its
	// queue heads, one after the other, keep its entries alive.
	looks map[string]time.Time
	// nexts is, per name, the lowest ticket queued that the latest release
	// notification carried (see parsePayload).
	nexts map[string]int64
	// listener is the running listener; nil while nobody waits, and
	// once closed.
	listener *listener
	// closed is set by close: no listener starts after it, so that
	// Client.Close joins every one that ran.
	closed bool
	// lingering stops the listener a while after the last waiter left.
	lingering *time.Timer
	// listeners counts every listener's goroutine, for Client.Close.
	listeners sync.WaitGroup
	// sessions counts LISTEN sessions active now, of any listener: a
	// stopped listener may take a moment to close its session while the
	// next one already listens.
	sessions atomic.Int32
	// deaf is set once a probe showed that notifications cannot reach this
	// client's sessions (see probe): no listener starts again.
	deaf atomic.Bool
	// pollNote logs once why waiters poll without notifications.
	pollNote sync.Once
	// heard is set once the probe of one of this client's sessions arrived:
	// notifications can reach its sessions, so a later probe that misses
	// does not make it deaf.
	heard atomic.Bool
	// wrapDial, set by tests before anyone waits, wraps the dial of every
	// listener.
	wrapDial func(dialFunc) dialFunc
}

// waiter is one goroutine blocked in AcquireContext.
type waiter struct {
	name string
	turn chan struct{} // closed when it heads its queue
	wake chan struct{} // a release of its name was announced

	// notified is when a release notification of its name last woke it, in
	// monotonic nanoseconds (see monoNow); 0 if none did.
	notified atomic.Int64
	timed    bool // its wait time was recorded (by the acquiring goroutine)
	polls    int  // how many times it slept (by the acquiring goroutine)
	// seat is its place in the table's fair queue (queue.go); its ticket
	// is written under waitRoom.mu.
	seat queueSeat
}

// sighting is an RVN seen on a held row: when it was first seen, and when
// last.
type sighting struct {
	rvn             int64
	first, lastSeen time.Time
}

func newWaitRoom(c *Client) *waitRoom {
	return &waitRoom{c: c, queues: make(map[string][]*waiter), watched: make(map[string]sighting),
		watches: make(map[string]*watch), looks: make(map[string]time.Time), nexts: make(map[string]int64)}
}

// observe records that name was seen held at rvn at seen. The first
// sighting of an RVN starts its lease; seeing it again confirms it.
func (r *waitRoom) observe(name string, rvn int64, seen time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.watched[name]; ok && s.rvn == rvn && !r.forgottenLocked(s, seen) {
		s.lastSeen = seen
		r.watched[name] = s
		return
	}
	if _, ok := r.watched[name]; !ok && len(r.watched) >= maxWatched {
		r.makeRoomLocked(seen)
	}
	r.watched[name] = sighting{rvn: rvn, first: seen, lastSeen: seen}
}

// forgetAfter is how long, in leases, a sighting stays remembered without
// being seen again. Within one wait the waiter looks many times a lease;
// a FailIfLocked sweep may look once a lease, so "about a lease" must allow
// a little more than one.
const forgetAfter = 2

// forgottenLocked reports whether s went unconfirmed for more than
// forgetAfter leases by now: the row may have changed and changed back
// meanwhile (a table made again restarts its sequence, and a new holder may
// get the RVN seen before), so s says nothing any more.
func (r *waitRoom) forgottenLocked(s sighting, now time.Time) bool {
	return now.Sub(s.lastSeen) > forgetAfter*r.c.leaseDuration
}

// makeRoomLocked frees a place in watched: it drops sightings that were
// forgotten, and else the youngest one. A lock whose RVN keeps changing
// (its holder lives) is seen anew at every change, so it is the young
// sightings that are worth least; the oldest are those closest to proving
// a holder dead, and a sweep over more names than fit must keep them.
func (r *waitRoom) makeRoomLocked(now time.Time) {
	var (
		youngest string
		at       time.Time
	)
	for name, s := range r.watched {
		if r.forgottenLocked(s, now) {
			delete(r.watched, name)
			continue
		}
		if youngest == "" || s.first.After(at) {
			youngest, at = name, s.first
		}
	}
	if len(r.watched) >= maxWatched {
		delete(r.watched, youngest)
	}
}

// forget drops what was watched of name, once it is acquired.
func (r *waitRoom) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.watched, name)
}

// stale returns the RVN of name seen unchanged for a whole lease, and not
// forgotten since, if any; and when the sighting will be stale
// otherwise (zero when there is none).
func (r *waitRoom) stale(name string, now time.Time) (rvn sql.NullInt64, staleAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.watched[name]
	if !ok {
		return sql.NullInt64{}, time.Time{}
	}
	if r.forgottenLocked(s, now) {
		delete(r.watched, name)
		return sql.NullInt64{}, time.Time{}
	}
	staleAt = s.first.Add(r.c.leaseDuration)
	if !now.Before(staleAt) {
		return sql.NullInt64{Int64: s.rvn, Valid: true}, staleAt
	}
	return sql.NullInt64{}, staleAt
}

// join queues a waiter for name and starts the listener if needed.
func (r *waitRoom) join(name string) *waiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.joinLocked(name)
}

// joinIfQueued queues a waiter for name only when others already queue for
// it; it returns nil otherwise.
func (r *waitRoom) joinIfQueued(name string) *waiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queues[name]) == 0 {
		return nil
	}
	return r.joinLocked(name)
}

func (r *waitRoom) joinLocked(name string) *waiter {
	w := &waiter{name: name, turn: make(chan struct{}), wake: make(chan struct{}, 1)}
	r.queues[name] = append(r.queues[name], w)
	if len(r.queues[name]) == 1 {
		close(w.turn)
	}
	r.keepListenerLocked()
	if r.listener == nil && !r.closed {
		r.listener = r.startListener()
	}
	return w
}

// leave takes w out of its queue, hands the turn to the next waiter, and
// tells the listener to stop when nobody waits any more. It does not wait
// for the listener to exit: a listener stuck on a dead connection must not
// hold up a waiter whose context ended.
func (r *waitRoom) leave(w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queues[w.name]
	for i, x := range q {
		if x == w {
			q = append(q[:i], q[i+1:]...)
			if i == 0 && len(q) > 0 {
				close(q[0].turn)
			}
			break
		}
	}
	if len(q) == 0 {
		delete(r.queues, w.name)
		delete(r.looks, w.name)
		delete(r.nexts, w.name)
	} else {
		r.queues[w.name] = q
	}
	r.stopListenerIfIdleLocked()
}

// listenerLinger is how long the listener stays after the last waiter or
// observer left, so that a client that waits again soon (a worker that
// loops on Acquire) keeps its session: a new one costs a connection, a
// LISTEN and a probe, whose NOTIFY costs every listening backend of the
// database a transaction.
const listenerLinger = 100 * time.Millisecond

// stopListenerIfIdleLocked stops the listener once nobody waited or
// observed for listenerLinger. r.mu must be held.
func (r *waitRoom) stopListenerIfIdleLocked() {
	if len(r.queues) > 0 || len(r.watches) > 0 || r.listener == nil || r.lingering != nil {
		return
	}
	l := r.listener
	r.lingering = time.AfterFunc(listenerLinger, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.listener == l && len(r.queues) == 0 && len(r.watches) == 0 {
			l.stop()
			r.listener = nil
		}
		r.lingering = nil
	})
}

// keepListenerLocked cancels a pending stop of the listener, for a new
// waiter or observer. r.mu must be held.
func (r *waitRoom) keepListenerLocked() {
	if r.lingering != nil {
		r.lingering.Stop()
		r.lingering = nil
	}
}

// waitTurn blocks until w heads its queue and the listener is ready or gave
// up, or ctx ends.
func (r *waitRoom) waitTurn(ctx context.Context, w *waiter) error {
	select {
	case <-w.turn:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.mu.Lock()
	var ready <-chan struct{}
	if r.listener != nil {
		ready = r.listener.ready
	}
	r.mu.Unlock()
	t := time.NewTimer(listenerSetupWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// pollInterval is how long a queue head sleeps when nothing wakes it; its
// first sleep of a wait (first) is a random part of that, its phase.
func (r *waitRoom) pollInterval(first bool) time.Duration {
	d := r.c.leaseDuration / 4
	if !r.isListening() {
		d = min(d, pollWithoutListener)
	}
	if first {
		return time.Duration(rand.Int64N(int64(d)) + 1)
	}
	return d
}

// announce wakes the head waiter of name, and of the semaphore name is a
// permit row of (see permitQueue), or of every name when all is set
// (a listener (re)connected and may have missed releases).
func (r *waitRoom) announce(name string, all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wake := func(q []*waiter) {
		select {
		case q[0].wake <- struct{}{}:
		default:
		}
	}
	if !all {
		name, next := parsePayload(name)
		if q := r.queues[name]; len(q) > 0 {
			if next != 0 {
				r.nexts[name] = next
			}
			q[0].notified.Store(monoNow())
			wake(q)
		}
		if w := r.watches[name]; w != nil {
			w.notify()
		}
		if sem, ok := permitQueue(name); ok {
			if q := r.queues[sem]; len(q) > 0 {
				q[0].notified.Store(monoNow())
				wake(q)
			}
		}
		return
	}
	for _, q := range r.queues {
		wake(q)
	}
	for _, w := range r.watches {
		w.notify()
	}
}

// isListening reports whether release notifications arrive now.
func (r *waitRoom) isListening() bool {
	return r.sessions.Load() > 0
}

// close stops the listener, for Client.Close.
func (r *waitRoom) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.keepListenerLocked()
	if r.listener != nil {
		r.listener.stop()
		r.listener = nil
	}
}

// sleepFor waits d on the client's clock for w, unless a release of its
// name is announced first (woke) or ctx ends. The clock that counts leases
// also times the waits computed from them.
func (c *Client) sleepFor(ctx context.Context, w *waiter, d time.Duration) (woke bool, err error) {
	due := make(chan struct{})
	t := c.clock.afterFunc(max(d, 0), func() { close(due) })
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, contextError(ctx, ErrNotAcquired)
	case <-w.wake:
		return true, nil
	case <-due:
		return false, nil
	}
}

// seat gives w its ticket in the fair queue.
func (r *waitRoom) seat(w *waiter, ticket int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.seat.ticket = ticket
}

// unseat takes w's ticket away, and returns it.
func (r *waitRoom) unseat(w *waiter) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := w.seat.ticket
	w.seat.ticket = 0
	return t
}

// tickets returns the tickets of this client's waiters for name, lowest
// first.
func (r *waitRoom) tickets(name string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ts []int64
	for _, w := range r.queues[name] {
		if w.seat.ticket != 0 {
			ts = append(ts, w.seat.ticket)
		}
	}
	slices.Sort(ts)
	return ts
}

// ticketOf returns w's ticket.
func (r *waitRoom) ticketOf(w *waiter) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return w.seat.ticket
}

// takeNext returns and forgets the lowest ticket the latest release of
// name carried, 0 if none came.
func (r *waitRoom) takeNext(name string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nexts[name]
	delete(r.nexts, name)
	return n
}

// looked records that the client looked at name's queue at t. After the
// first look of a wait, the next comes at a random part of the poll
// interval, its phase, so that a fleet's waiters do not look in step.
func (r *waitRoom) looked(name string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.queues[name]; !ok {
		return
	}
	if _, ok := r.looks[name]; !ok {
		t = t.Add(r.pollInterval(true) - r.pollInterval(false))
	}
	r.looks[name] = t
}

// untilLook is how long from now until the client's next look at name's
// queue: a poll interval after its last, or a random part of one when it
// has not looked yet.
func (r *waitRoom) untilLook(name string, now time.Time) time.Duration {
	r.mu.Lock()
	last, ok := r.looks[name]
	r.mu.Unlock()
	if !ok {
		return r.pollInterval(true)
	}
	return last.Add(r.pollInterval(false)).Sub(now)
}
