// Package bounded runs blocking calls so that none keeps its caller waiting
// after the caller's context ended, whatever the call does: lib/pq, for
// one, keeps reading a silent socket after its context ended, until TCP
// gives up, and sends no timeout of its own while it connects.
//
// A call that does not return within a grace period of its context's end
// is left running on its own goroutine, and the caller gets the context's
// error at once. The Runner owns those goroutines: Wait joins them.
package bounded

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultGrace is the grace period of a Runner whose Grace is zero.
const DefaultGrace = 20 * time.Millisecond

// Runner runs calls bounded by their contexts. The zero value is ready to
// use; it must not be copied after first use.
type Runner struct {
	// Grace is how long a call whose context ended may still take to
	// return on its own (as pgx's calls do, with their own error) before
	// it is left behind; DefaultGrace when zero.
	Grace time.Duration
	// Bound, when positive, bounds every call whose context has no
	// deadline, so that no call runs unbounded whatever its caller's
	// context.
	Bound time.Duration

	running   tracker
	stuck     atomic.Int64 // calls left behind that have not returned yet
	abandoned atomic.Int64 // calls ever left behind
}

// Call states, for the handshake between a caller and its call.
const (
	running int32 = iota
	returned
	left
)

// AbandonedError is the error of a call left behind: its context ended
// while it was still running, so its outcome is unknown. It wraps the
// context's error.
type AbandonedError struct{ Err error }

func (e *AbandonedError) Error() string { return e.Err.Error() }
func (e *AbandonedError) Unwrap() error { return e.Err }

// Run calls f(ctx) and returns its error, or an *AbandonedError once ctx
// ended and f did not return within the grace period. f then goes on
// alone; when it returns, late (if not nil) receives its error, so the
// caller can clean up what a call it gave up on did after all.
func (r *Runner) Run(ctx context.Context, f func(context.Context) error, late func(error)) error {
	if _, ok := ctx.Deadline(); !ok && r.Bound > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Bound)
		defer cancel()
	}
	if ctx.Done() == nil {
		return f(ctx) // a context that never ends cannot be outlived
	}
	var state atomic.Int32
	done := make(chan error, 1)
	r.running.add()
	go func() {
		defer r.running.done()
		err := f(ctx)
		if state.CompareAndSwap(running, returned) {
			done <- err
			return
		}
		r.stuck.Add(-1)
		if late != nil {
			late(err)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(r.grace())
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if !state.CompareAndSwap(running, left) {
		return <-done // it returned just now
	}
	r.stuck.Add(1)
	r.abandoned.Add(1)
	return &AbandonedError{ctx.Err()}
}

func (r *Runner) grace() time.Duration {
	if r.Grace > 0 {
		return r.Grace
	}
	return DefaultGrace
}

// Spawn runs f on a goroutine of the runner's, which Wait joins.
func (r *Runner) Spawn(f func()) {
	r.running.add()
	go func() {
		defer r.running.done()
		f()
	}()
}

// Wait waits until every call left behind and every spawned function
// returned, or ctx ends, and then returns ctx's error.
func (r *Runner) Wait(ctx context.Context) error {
	select {
	case <-r.running.idle():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stuck is how many calls left behind have not returned yet.
func (r *Runner) Stuck() int64 { return r.stuck.Load() }

// Abandoned is how many calls were ever left behind.
func (r *Runner) Abandoned() int64 { return r.abandoned.Load() }

// tracker counts running goroutines. Unlike a sync.WaitGroup, it may gain
// a goroutine while another waits for it to reach zero: a client's reads
// go on after Close began waiting.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n reaches 0; nil while nobody waits
}

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// idle returns a channel closed once no goroutine runs.
func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return closedChan
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	return t.zero
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
