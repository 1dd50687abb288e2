package pglock

import "time"

// clock is the time source of lease accounting: when a statement began,
// when a holder's lease runs out, when a waiter first saw an RVN. The real
// one reads the monotonic clock; the protocol's tests drive a manual one.
type clock interface {
	now() time.Time
	// afterFunc calls f in its own goroutine once d has passed.
	afterFunc(d time.Duration, f func()) stopper
}

// stopper stops a timer made by clock.afterFunc.
type stopper interface {
	Stop() bool
}

// realClock is the process's monotonic clock.
type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) afterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
