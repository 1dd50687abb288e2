package cron

import (
	"context"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"cirello.io/pglock"
)

// Locker takes the locks of jobs, without waiting, on one pglock.Client.
type Locker struct {
	c           *pglock.Client
	log         cron.Logger
	lockTimeout time.Duration
}

// Option configures NewLocker.
type Option func(*Locker)

// WithLogger logs the runs Wrap skips: at Info when another replica holds
// the lock, at Error when the lock could not be taken for another reason.
// The default logs nothing. cron.VerbosePrintfLogger and cron.PrintfLogger
// adapt a *log.Logger.
func WithLogger(l cron.Logger) Option {
	return func(lk *Locker) { lk.log = l }
}

// WithLockTimeout bounds each attempt of Wrap to take a job's lock (one
// round trip to the database, without waiting for a holder). The default
// is 10 seconds.
func WithLockTimeout(d time.Duration) Option {
	return func(lk *Locker) { lk.lockTimeout = d }
}

// NewLocker returns a Locker that takes locks with c. The lock's lease and
// heartbeat are c's; every replica of a job must use the same lease and
// lock table. c must not be nil.
func NewLocker(c *pglock.Client, opts ...Option) *Locker {
	lk := &Locker{c: c, log: cron.DiscardLogger, lockTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(lk)
	}
	return lk
}

// TryLock takes the lock name without waiting, within ctx: when someone
// else holds it, it fails at once with an error that wraps
// pglock.ErrNotAcquired. The lock is then held, kept alive by heartbeats,
// until Held.Unlock or until it is lost, whatever becomes of ctx.
func (lk *Locker) TryLock(ctx context.Context, name string) (*Held, error) {
	l, err := lk.c.AcquireContext(ctx, name,
		pglock.FailIfLocked(),
		pglock.WithCustomHeartbeatContext(context.Background()))
	if err != nil {
		return nil, fmt.Errorf("pglock/cron: cannot take the lock %q: %w", name, err)
	}
	return hold(lk.c, l), nil
}
