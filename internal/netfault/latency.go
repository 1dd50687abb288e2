package netfault

import (
	"context"
	"sync"
	"time"
)

// latency is the delay the proxy adds to every chunk, in each direction.
type latency struct {
	mu      sync.Mutex
	d       time.Duration
	changed chan struct{} // closed and replaced when d changes
}

// get returns the delay and a channel closed when it changes.
func (l *latency) get() (time.Duration, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d, l.changed
}

// set changes the delay and wakes the writers waiting on the old one.
func (l *latency) set(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d == l.d {
		return
	}
	l.d = d
	close(l.changed)
	l.changed = make(chan struct{})
}

// SetLatency makes the proxy deliver every chunk of bytes d after it read
// it, in each direction, on open and new flows; d <= 0 turns latency off.
// Each direction keeps its bytes in order and holds each chunk until its
// read time plus the latency in force, so a burst is delayed by d once, not
// d per chunk. A change applies at once to the chunks waiting: lowering the
// latency releases those now due. A direction holds at most queueLen chunks
// in flight; beyond that the proxy stops reading from the sender, as a full
// TCP window would.
func (p *Proxy) SetLatency(d time.Duration) {
	p.lat.set(max(d, 0))
}

// Latency returns the latency in force.
func (p *Proxy) Latency() time.Duration {
	d, _ := p.lat.get()
	return d
}

// due waits until the chunk read at readAt is due, that is until readAt plus
// the latency in force, and reports false if ctx ends first.
func (l *latency) due(ctx context.Context, readAt time.Time) bool {
	for {
		d, changed := l.get()
		wait := time.Until(readAt.Add(d))
		if d == 0 || wait <= 0 {
			return ctx.Err() == nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return false
		}
	}
}
