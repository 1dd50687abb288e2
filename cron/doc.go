// Package cron runs github.com/robfig/cron/v3 jobs on one replica at a
// time: a job wrapped by Locker.Wrap runs only while this process holds the
// job's pglock lock. It is a module of its own, cirello.io/pglock/cron, so
// that programs that use pglock without cron never download it.
//
// Every replica runs the same schedule. At each tick, each replica tries to
// take the job's lock without waiting: the one that gets it runs the job and
// holds the lock, kept past its lease by heartbeats, for the job's whole
// run; the others skip that run. A run that is still going when the next
// tick comes makes every replica skip that tick, this one included.
//
//	lk := pglockcron.NewLocker(client)
//	c := cron.New()
//	c.AddJob("@every 1m", cron.NewChain(lk.Wrap("nightly-report")).Then(job))
//
// The package's name is cron, as its path says; import it under another
// name (pglockcron above) next to robfig's cron package.
//
// # What it promises
//
// One replica at a time: two runs of a job that share its lock never
// overlap while the lock is held. It does not promise exactly one run per
// tick. A run that ends before another replica's tick fires (clocks differ,
// a process is slow to wake) lets that replica run the same tick again, and
// a tick at which the database cannot be reached runs nowhere. A job that
// must run once per period records what it did (the period it covered) in
// the store it writes to, and checks it first.
//
// # Losing the lock
//
// The lock can be lost while the job runs: another replica took it over
// after no heartbeat succeeded for a whole lease (a network partition, a
// stalled process), or an operator released it by force. A job that
// implements ContextJob (ContextFunc makes one of a function) is run with a
// context that ends then; context.Cause says why. A plain cron.Job cannot
// be told, and keeps running. Lock.Guard, on the Held returned by TryLock,
// and the lock's fencing token fence what the job writes.
//
// # Other schedulers
//
// Locker.TryLock is the same step on its own: it returns a Held whose
// Unlock releases the lock, the shape of the distributed lockers of other
// schedulers (docs/cron.md in the repository shows gocron's).
package cron
