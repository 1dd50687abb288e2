package pglock

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// Polling bounds for waiters. Notifications wake a waiter at once; polling
// catches what they miss: releases by clients that do not notify (the
// original library), and releases while no listener could be had.
const (
	pollWithListener    = 250 * time.Millisecond
	pollWithoutListener = 25 * time.Millisecond
	listenerSetupWait   = 250 * time.Millisecond
	maxWatched          = 10000
)

// waitRoom is where a Client's waiters queue, one FIFO per lock name, and
// where release notifications reach them. Only the head of each queue sends
// statements; the others wait their turn, so one client never starves its
// own goroutines and a release costs one statement per waiting client. One
// listening connection per Client runs while anyone waits.
type waitRoom struct {
	c *Client

	mu        sync.Mutex
	queues    map[string][]*waiter
	watched   map[string]watch // RVN seen per name and when first seen
	listening bool             // LISTEN is active: notifications arrive
	ready     chan struct{}    // closed when listening starts or gives up
	stop      context.CancelFunc
	done      chan struct{}
}

// waiter is one goroutine blocked in AcquireContext.
type waiter struct {
	name string
	turn chan struct{} // closed when it heads its queue
	wake chan struct{} // a release of its name was announced

	// notified is when a release notification of its name last woke it, in
	// monotonic nanoseconds (see monoNow); 0 if none did.
	notified atomic.Int64
}

// watch is an RVN seen on a held row, and when it was first seen.
type watch struct {
	rvn  int64
	seen time.Time
}

func newWaitRoom(c *Client) *waitRoom {
	return &waitRoom{c: c, queues: make(map[string][]*waiter), watched: make(map[string]watch)}
}

// observe records that name was seen held at rvn. The first sighting of an
// RVN starts its lease; sighting it again does not restart it.
func (r *waitRoom) observe(name string, rvn int64, seen time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watched[name]; ok && w.rvn == rvn {
		return
	}
	if len(r.watched) >= maxWatched {
		for k, w := range r.watched {
			if seen.Sub(w.seen) > r.c.leaseDuration {
				delete(r.watched, k)
			}
		}
		if len(r.watched) >= maxWatched {
			clear(r.watched)
		}
	}
	r.watched[name] = watch{rvn: rvn, seen: seen}
}

// forget drops what was watched of name, once it is acquired.
func (r *waitRoom) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.watched, name)
}

// stale returns the RVN of name that was seen unchanged for a whole lease, if
// any, and when it may be taken otherwise.
func (r *waitRoom) stale(name string, now time.Time) (rvn sql.NullInt64, staleAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.watched[name]
	if !ok {
		return sql.NullInt64{}, time.Time{}
	}
	staleAt = w.seen.Add(r.c.leaseDuration)
	if !now.Before(staleAt) {
		return sql.NullInt64{Int64: w.rvn, Valid: true}, staleAt
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
	if r.stop == nil {
		ctx, cancel := context.WithCancel(context.Background())
		r.stop, r.done, r.ready = cancel, make(chan struct{}), make(chan struct{})
		r.listening = false
		go r.listen(ctx, r.done, r.ready)
	}
	return w
}

// leave takes w out of its queue, hands the turn to the next waiter, and
// stops the listener, waiting for it, when nobody waits any more.
func (r *waitRoom) leave(w *waiter) {
	r.mu.Lock()
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
	} else {
		r.queues[w.name] = q
	}
	var done chan struct{}
	if len(r.queues) == 0 && r.stop != nil {
		r.stop()
		done = r.done
		r.stop, r.done = nil, nil
	}
	r.mu.Unlock()
	if done != nil {
		<-done
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
	ready := r.ready
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

// pollInterval is how long a queue head sleeps when nothing wakes it.
func (r *waitRoom) pollInterval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listening {
		return jitter(min(pollWithListener, r.c.leaseDuration/4))
	}
	return jitter(min(pollWithoutListener, r.c.leaseDuration/4))
}

// announce wakes the head waiter of name, or of every name when name is
// empty (the listener reconnected and may have missed releases).
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
		if q := r.queues[name]; len(q) > 0 {
			q[0].notified.Store(monoNow())
			wake(q)
		}
		return
	}
	for _, q := range r.queues {
		wake(q)
	}
}

func (r *waitRoom) setListening(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listening = on
	if on {
		r.c.stats.listens.Add(1)
	}
}

// isListening reports whether release notifications arrive now.
func (r *waitRoom) isListening() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listening
}

// listen keeps one LISTEN connection open until ctx ends, reconnecting with
// backoff, and turns notifications into wake-ups. It closes ready once the
// first attempt succeeded or failed, and done when it exits. Without a way to
// listen (see listener) it gives up at once and waiters poll.
func (r *waitRoom) listen(ctx context.Context, done, ready chan struct{}) {
	defer close(done)
	readyOnce := sync.OnceFunc(func() { close(ready) })
	defer readyOnce()
	serve := r.listener()
	if serve == nil {
		r.c.log.Debug("no way to LISTEN on this *sql.DB: waiters poll")
		return
	}
	channel := r.c.table.channel()
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		err := serve(ctx, channel, readyOnce)
		readyOnce()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNoNotifications) {
			r.c.log.Debug("the driver cannot LISTEN: waiters poll")
			return
		}
		r.c.log.Debug("release listener lost, reconnecting", "error", err, "backoff", backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// serve runs one listening connection until it breaks or ctx ends.
func (r *waitRoom) serve(ctx context.Context, dsn, channel string, ready func()) error {
	notes := make(chan *pq.Notification, 64)
	conn, err := pq.NewListenerConn(dsn, notes)
	if err != nil {
		return err
	}
	defer func() {
		r.setListening(false)
		_ = conn.Close()
		for range notes { // the connection's reader closes notes when it exits
		}
	}()
	stopClose := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stopClose()
	if _, err := conn.Listen(channel); err != nil {
		return err
	}
	r.setListening(true)
	ready()
	r.announce("", true) // releases between a waiter's last try and LISTEN
	for n := range notes {
		if n != nil && n.Channel == channel {
			r.c.stats.notifications.Add(1)
			r.announce(n.Extra, false)
		}
	}
	return conn.Err()
}

// dataSourceName recovers the connection string a *sql.DB was opened with
// by sql.Open. database/sql keeps it unexported; it is read, never changed.
// A *sql.DB made by sql.OpenDB from a connector has none.
func dataSourceName(db *sql.DB) (string, bool) {
	v := reflect.ValueOf(db).Elem().FieldByName("connector")
	if !v.IsValid() || v.Kind() != reflect.Interface || v.IsNil() {
		return "", false
	}
	v = v.Elem()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct || v.Type().PkgPath() != "database/sql" {
		return "", false
	}
	f := v.FieldByName("dsn")
	if !f.IsValid() || f.Kind() != reflect.String {
		return "", false
	}
	return f.String(), true
}

// jitter spreads d over [d/2, d) so that pollers do not march in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}
