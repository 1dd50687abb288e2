package cron

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cirello.io/pglock"
)

// errUnlocked is the cause of a Held's context after Unlock.
var errUnlocked = errors.New("pglock/cron: unlocked")

// Held is a lock TryLock took. Its context ends when the lock is lost or
// unlocked. Call Unlock once done with it, lost or not: until then the
// lock is held, and a goroutine watches it.
type Held struct {
	c      *pglock.Client
	l      *pglock.Lock
	ctx    context.Context
	cancel context.CancelCauseFunc

	// The watch goroutine belongs to the Held: it ends when the lock does
	// or when stop is closed, and Unlock waits for it (stopped).
	stop, stopped chan struct{}
	unlock        sync.Once
	unlockErr     error
}

// hold returns a Held of l and starts its watch.
func hold(c *pglock.Client, l *pglock.Lock) *Held {
	ctx, cancel := context.WithCancelCause(context.Background())
	h := &Held{c: c, l: l, ctx: ctx, cancel: cancel, stop: make(chan struct{}), stopped: make(chan struct{})}
	go h.watch()
	return h
}

// watch ends the context when the lock ends, with why it ended as the
// cause, until Unlock.
func (h *Held) watch() {
	defer close(h.stopped)
	select {
	case <-h.l.Done():
		h.cancel(fmt.Errorf("pglock/cron: lock %q lost: %w", h.l.Name(), h.l.Err()))
	case <-h.stop:
	}
}

// Context returns a context that ends when the lock is lost (context.Cause
// wraps pglock.ErrLockAlreadyReleased and says why) or unlocked.
func (h *Held) Context() context.Context { return h.ctx }

// Lock returns the pglock lock: its fencing token (RecordVersionNumber) and
// Guard fence what the job writes.
func (h *Held) Lock() *pglock.Lock { return h.l }

// Unlock releases the lock within ctx and ends the Held's context. It
// returns an error wrapping pglock.ErrLockAlreadyReleased when the lock had
// been lost. Calls after the first return the first one's result.
func (h *Held) Unlock(ctx context.Context) error {
	h.unlock.Do(func() {
		close(h.stop)
		<-h.stopped
		h.cancel(errUnlocked)
		if err := h.c.ReleaseContext(ctx, h.l); err != nil {
			h.unlockErr = fmt.Errorf("pglock/cron: releasing %q: %w", h.l.Name(), err)
		}
	})
	return h.unlockErr
}
