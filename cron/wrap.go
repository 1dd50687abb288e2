package cron

import (
	"context"
	"errors"

	"github.com/lib/pq"
	"github.com/robfig/cron/v3"

	"cirello.io/pglock"
)

// ContextJob is a job that learns when its lock is lost: Wrap calls its
// RunContext(ctx) instead of Run(), and ctx ends when the lock is lost (or
// once RunContext has returned and the lock is released). context.Cause(ctx)
// says why.
type ContextJob interface {
	cron.Job
	RunContext(ctx context.Context)
}

// ContextFunc is a ContextJob made of a function, as cron.FuncJob is a Job.
// Run, outside Wrap, calls it with a context that never ends.
type ContextFunc func(ctx context.Context)

// Run implements cron.Job.
func (f ContextFunc) Run() { f(context.Background()) }

// RunContext implements ContextJob.
func (f ContextFunc) RunContext(ctx context.Context) { f(ctx) }

// Wrap returns a cron.JobWrapper that runs a job only while this process
// holds the lock name, taken without waiting: when another replica holds
// it (or a previous run of this one still does), that run is skipped. The
// lock is held for the job's whole run and released when it returns, or
// panics. Each wrapped job needs a name of its own.
func (lk *Locker) Wrap(name string) cron.JobWrapper {
	return func(job cron.Job) cron.Job {
		return cron.FuncJob(func() { lk.run(name, job) })
	}
}

// run is one tick of a wrapped job.
func (lk *Locker) run(name string, job cron.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), lk.lockTimeout)
	h, err := lk.TryLock(ctx, name)
	cancel()
	if err != nil {
		lk.skipped(name, err)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), lk.lockTimeout)
		defer cancel()
		if err := h.Unlock(ctx); err != nil {
			lk.log.Error(err, "job ran, but its lock did not end well", "job", name)
		}
	}()
	if cj, ok := job.(ContextJob); ok {
		cj.RunContext(h.Context())
		return
	}
	job.Run()
}

// skipped logs a run that did not take its lock.
func (lk *Locker) skipped(name string, err error) {
	if heldElsewhere(err) {
		lk.log.Info("job skipped: its lock is held", "job", name)
		return
	}
	lk.log.Error(err, "job skipped: cannot take its lock", "job", name)
}

// heldElsewhere reports whether err, from TryLock, means that someone else
// holds the lock rather than that taking it failed.
func heldElsewhere(err error) bool {
	var (
		unavailable *pglock.UnavailableError
		pqErr       *pq.Error
	)
	return errors.Is(err, pglock.ErrNotAcquired) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
		!errors.As(err, &unavailable) && !errors.As(err, &pqErr) &&
		!errors.Is(err, pglock.ErrInvalidName) && !errors.Is(err, pglock.ErrInvalidTableName) &&
		!errors.Is(err, pglock.ErrClosed)
}
