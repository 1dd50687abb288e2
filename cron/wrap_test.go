package cron

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"cirello.io/pglock"
)

// TestLossEndsContext takes a running job's lock away (a forced release,
// then another client takes it): the job's context ends, its cause says
// the lock was lost, and the wrapper reports the failed release.
func TestLossEndsContext(t *testing.T) {
	table := uniqueTable()
	short := []pglock.ClientOption{pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(250 * time.Millisecond)}
	var log logRecorder
	lk := NewLocker(newClient(t, table, short...), WithLogger(&log))
	thief := newClient(t, table, short...)

	started, cause := make(chan struct{}), make(chan error, 1)
	job := cron.NewChain(lk.Wrap("stolen")).Then(ContextFunc(func(ctx context.Context) {
		close(started)
		select {
		case <-ctx.Done():
			cause <- context.Cause(ctx)
		case <-time.After(30 * time.Second):
			cause <- errors.New("the context never ended")
		}
	}))
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		job.Run()
	}()
	<-started
	if err := thief.ForceRelease(context.Background(), "stolen"); err != nil {
		t.Fatal(err)
	}
	l, err := thief.Acquire("stolen", pglock.FailIfLocked())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := <-cause; !errors.Is(err, pglock.ErrLockAlreadyReleased) {
		t.Errorf("the job's context ended with cause %v, want one wrapping ErrLockAlreadyReleased", err)
	}
	<-ran
	if !log.has("error", "did not end well") {
		t.Errorf("the wrapper did not report the lost lock; logged %q", log.lines())
	}
	if l.IsReleased() {
		t.Error("the wrapper released the thief's lock")
	}
}

// TestSkippedWhileHeld runs a wrapped job while another client holds its
// lock: the job does not run, and the skip is logged at Info. Once the
// lock is free the job runs, and its lock is released after.
func TestSkippedWhileHeld(t *testing.T) {
	table := uniqueTable()
	var log logRecorder
	lk := NewLocker(newClient(t, table), WithLogger(&log))
	other := newClient(t, table)
	runs := 0
	job := cron.NewChain(lk.Wrap("busy")).Then(cron.FuncJob(func() { runs++ }))

	l, err := other.Acquire("busy")
	if err != nil {
		t.Fatal(err)
	}
	job.Run()
	if runs != 0 || !log.has("info", "lock is held") {
		t.Errorf("ran %d times while the lock was held elsewhere; logged %q", runs, log.lines())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	job.Run()
	if runs != 1 {
		t.Errorf("ran %d times once the lock was free, want 1", runs)
	}
	if _, err := other.Get("busy"); !errors.Is(err, pglock.ErrLockNotFound) {
		t.Errorf("after the run, Get = %v, want ErrLockNotFound", err)
	}
}

// TestTryLock takes a lock with TryLock: a second Locker fails at once with
// ErrNotAcquired until Unlock, which ends the Held's context.
func TestTryLock(t *testing.T) {
	table := uniqueTable()
	a, b := NewLocker(newClient(t, table)), NewLocker(newClient(t, table))
	ctx := context.Background()
	h, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, pglock.ErrNotAcquired) || !heldElsewhere(err) {
		t.Fatalf("second TryLock = %v, want ErrNotAcquired for a held lock", err)
	}
	if err := h.Context().Err(); err != nil {
		t.Fatalf("the Held's context ended while held: %v", err)
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(context.Cause(h.Context()), errUnlocked) {
		t.Errorf("after Unlock, the context's cause is %v", context.Cause(h.Context()))
	}
	h2, err := b.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	if err := h2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// logRecorder is a cron.Logger that keeps what it was told.
type logRecorder struct {
	mu  sync.Mutex
	log []string
}

func (r *logRecorder) Info(msg string, _ ...any) { r.add("info: " + msg) }

func (r *logRecorder) Error(err error, msg string, _ ...any) {
	r.add("error: " + msg + ": " + err.Error())
}

func (r *logRecorder) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, line)
}

func (r *logRecorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// has reports whether a line at level contains text.
func (r *logRecorder) has(level, text string) bool {
	for _, l := range r.lines() {
		if strings.HasPrefix(l, level+": ") && strings.Contains(l, text) {
			return true
		}
	}
	return false
}

// TestHeldPastLease runs a job for more than two leases: heartbeats keep
// its lock, so its context does not end and another replica's attempt in
// the middle of the run fails.
func TestHeldPastLease(t *testing.T) {
	table := uniqueTable()
	short := []pglock.ClientOption{pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(250 * time.Millisecond)}
	lk, other := NewLocker(newClient(t, table, short...)), NewLocker(newClient(t, table, short...))
	var otherErr, ctxErr error
	job := cron.NewChain(lk.Wrap("long")).Then(ContextFunc(func(ctx context.Context) {
		time.Sleep(1500 * time.Millisecond)
		if h, err := other.TryLock(context.Background(), "long"); err == nil {
			_ = h.Unlock(context.Background())
		} else {
			otherErr = err
		}
		time.Sleep(1500 * time.Millisecond)
		ctxErr = context.Cause(ctx)
	}))
	job.Run()
	if !heldElsewhere(otherErr) {
		t.Errorf("another replica's TryLock during the run: %v, want the lock held", otherErr)
	}
	if ctxErr != nil {
		t.Errorf("the job's context ended during the run: %v", ctxErr)
	}
}
