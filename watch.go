package pglock

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// A watch reads one election's leader for every Observe call of a Client
// on that election: one goroutine and one statement per read, however many
// observers. It reads when a notification on the election's name arrives
// (a new leader's acquisition, a resignation, a Proclaim) and, to catch what
// notifications miss (a leader that died, a takeover by a client of the
// original library), every quarter lease from a random phase: at most 4
// statements per lease while notifications arrive. Without notifications it
// reads as often as waiters poll.

// watch is the shared reader of one election's leader.
type watch struct {
	e    *Election
	poke chan struct{} // a notification of the election's name arrived

	mu      sync.Mutex
	subs    int
	stop    context.CancelFunc
	state   leaderState
	changed chan struct{} // closed and replaced whenever state changes
}

// leaderState is what a watch last read.
type leaderState struct {
	leader    Leader
	has       bool   // a leader was read
	vacancies uint64 // how many reads found no leader after one with a leader
}

// watchFor returns the watch of e, started if none runs, with one more
// subscriber; unwatch takes it back. It also counts the subscriber's own
// goroutine in Client.observers. Once the client is closed it returns
// false and starts nothing: Close may be waiting on observers.
func (r *waitRoom) watchFor(e *Election) (*watch, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	r.c.observers.Add(1) // the subscriber's goroutine
	w := r.watches[e.name]
	if w == nil {
		ctx, cancel := context.WithCancel(r.c.closing)
		w = &watch{e: e, poke: make(chan struct{}, 1), stop: cancel, changed: make(chan struct{})}
		r.watches[e.name] = w
		r.c.observers.Add(1)
		go func() {
			defer r.c.observers.Done()
			w.run(ctx)
		}()
		r.keepListenerLocked()
		if r.listener == nil {
			r.listener = r.startListener()
		}
	}
	w.mu.Lock()
	w.subs++
	w.mu.Unlock()
	return w, true
}

// unwatch drops a subscriber of w, and stops w after its last.
func (r *waitRoom) unwatch(w *watch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.mu.Lock()
	w.subs--
	last := w.subs == 0
	w.mu.Unlock()
	if !last {
		return
	}
	w.stop()
	if r.watches[w.e.name] == w {
		delete(r.watches, w.e.name)
	}
	r.stopListenerIfIdleLocked()
}

// run reads the leader until ctx ends.
func (w *watch) run(ctx context.Context) {
	c := w.e.c
	t := time.NewTimer(0)
	defer t.Stop()
	for first := true; ; first = false {
		select {
		case <-ctx.Done():
			return
		case <-w.poke:
		case <-t.C:
		}
		cur, err := w.e.leader(ctx, c.keep.onOwn)
		switch {
		case errors.Is(err, ErrNoLeader):
			w.publish(Leader{}, false)
		case err != nil:
			c.log.Debug("election observer cannot read the leader", "election", w.e.name, "error", err)
		default:
			w.publish(cur, true)
		}
		d := c.waits.pollInterval(false)
		if first {
			d = time.Duration(rand.Int64N(int64(d)) + 1)
		}
		t.Stop()
		t.Reset(d)
	}
}

// publish records what a read found, waking the subscribers when it
// changed.
func (w *watch) publish(cur Leader, has bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.state
	switch {
	case !has && !s.has:
		return
	case !has:
		s.has, s.leader = false, Leader{}
		s.vacancies++
	case s.has && s.leader.Owner == cur.Owner && s.leader.RVN == cur.RVN && bytes.Equal(s.leader.Value, cur.Value):
		return
	default:
		s.has, s.leader = true, cur
	}
	w.state = s
	close(w.changed)
	w.changed = make(chan struct{})
}

// current returns what the watch last read, and a channel closed at the
// next change.
func (w *watch) current() (leaderState, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.changed
}

// notify tells w that a notification of its election's name arrived.
func (w *watch) notify() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// observe sends ch the leaders w reads, as Election.Observe describes,
// until ctx ends.
func (w *watch) observe(ctx context.Context, ch chan<- Leader) {
	var (
		last      Leader
		sent      bool // last was sent
		vacancies uint64
	)
	for {
		s, changed := w.current()
		if s.has && (!sent || s.vacancies != vacancies || s.leader.Owner != last.Owner || !bytes.Equal(s.leader.Value, last.Value)) {
			select {
			case ch <- s.leader:
				last, sent, vacancies = s.leader, true, s.vacancies
			case <-changed:
				continue // send the newest instead
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}
