package pglock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Lock is a named lock held through a Client, or a row read with Get.
//
// Its methods are safe for concurrent use. A held Lock stays held until
// Release or Close, or until it is lost: someone took the row over, or no
// heartbeat succeeded for a whole lease. Done is closed at that moment, and
// never later than the moment another client could take the lock over.
type Lock struct {
	client           *Client
	name             string
	owner            string
	data             []byte
	failIfLocked     bool
	keepOnRelease    bool
	replaceData      bool
	heartbeatContext context.Context
	announce         bool // notify the release channel on acquisition (a campaign)
	// sem is the semaphore whose permit this lock takes; name is then set
	// (under the live registry's mutex) once a permit row is taken.
	sem *Semaphore
	// maybeTaken is set by the acquiring goroutine when an attempt's reply
	// was lost (driver.ErrBadConn): the row may already be ours.
	maybeTaken bool
	// waiting is set by the acquiring goroutine once it waits: its attempts
	// are polls.
	waiting bool
	// fair is set by the acquiring goroutine when its attempts go through
	// the table's fair queue (queue.go), and seat is then its waiter once
	// it waits.
	fair bool
	seat *waiter

	// op is held while a statement that depends on or changes this lock's
	// RVN is in flight: a heartbeat, a release, a Guard check, a Proclaim.
	// It keeps them from racing each other; the background heartbeat skips
	// a lock whose op is busy.
	op opLock

	mu          sync.Mutex
	rvn         int64
	refreshedAt time.Time // when the statement that set rvn began
	expiry      stopper
	ended       bool
	endErr      error
	done        chan struct{}
	// released is set once Release ended the lock; freeing while a
	// release attempt runs; freed once the row is known freed or gone, so
	// that a later Release has nothing left to do (see release.go).
	released bool
	freeing  bool
	freed    bool
	// unsettled is the start of the earliest statement that may have moved
	// the row without the lock knowing (see outcome.go); zero when none.
	unsettled time.Time
}

// driftDivisor sets the safety margin of a holder: it counts its lock lost
// lease/driftDivisor before the lease runs out on its own clock. A waiter
// starts its lease when its read of the row returns, which is after the
// holder's heartbeat began, but possibly only microseconds after; without a
// margin, a holder whose clock runs slower than the waiter's would give up
// after the waiter may take over. One percent covers clocks whose rates
// differ by up to 1% (real clocks differ by less than 0.1%, NTP slewing
// included), and leaves room for the holder's timer to fire late.
const driftDivisor = 100

// holdFor is how long after the start of its last successful refresh a
// holder keeps counting its lock held: the lease less the safety margin.
func (c *Client) holdFor() time.Duration {
	return c.leaseDuration - c.leaseDuration/driftDivisor
}

// newEndedLock returns a Lock that is not held: a row read with Get, or the
// holder's lock as FailIfLocked found it.
func newEndedLock(c *Client, name, owner string, data []byte, rvn int64, err error) *Lock {
	done := make(chan struct{})
	close(done)
	return &Lock{client: c, name: name, owner: owner, data: data, rvn: rvn,
		ended: true, endErr: err, released: true, freed: true, done: done, op: newOpLock()}
}

// opLock is a mutex whose lock gives up when a context ends.
type opLock chan struct{}

func newOpLock() opLock { return make(opLock, 1) }

// lock takes o, or returns ctx's error once ctx ended first.
func (o opLock) lock(ctx context.Context) error {
	select {
	case o <- struct{}{}:
		return nil
	default:
	}
	select {
	case o <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tryLock takes o if it is free.
func (o opLock) tryLock() bool {
	select {
	case o <- struct{}{}:
		return true
	default:
		return false
	}
}

func (o opLock) unlock() { <-o }

// hold marks a freshly acquired lock held with rvn, acquired by a statement
// that began at start, and arms its expiry holdFor after start.
func (l *Lock) hold(rvn int64, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rvn, l.refreshedAt = rvn, start
	l.done = make(chan struct{})
	l.armLocked()
}

// armLocked (re)arms the expiry timer for holdFor after refreshedAt.
func (l *Lock) armLocked() {
	if l.expiry != nil {
		l.expiry.Stop()
	}
	c := l.client
	l.expiry = c.clock.afterFunc(l.refreshedAt.Add(c.holdFor()).Sub(c.clock.now()), func() {
		l.end(errLeaseExpired)
	})
}

// refresh records that the row carries rvn, written by a statement that
// began at start (or, for a row read back, by one that began no earlier).
// It reports false when the lock had already ended; it then changes
// nothing, except that a lock Release ended keeps track of its row's RVN,
// so that the release frees the row a heartbeat in flight just moved.
func (l *Lock) refresh(rvn int64, start time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.endedLocked(l.now()) {
		if l.released && !l.freed {
			l.rvn, l.unsettled = rvn, time.Time{}
		}
		return false
	}
	l.rvn, l.unsettled = rvn, time.Time{}
	if start.After(l.refreshedAt) {
		l.refreshedAt = start
		l.armLocked()
	}
	return true
}

// end marks the lock released or lost with err, once, and closes Done. It
// reports whether this call ended it.
func (l *Lock) end(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.endLocked(err)
}

// now reads the client's clock; a Lock without a client is not held.
func (l *Lock) now() time.Time {
	if l.client == nil {
		return time.Time{}
	}
	return l.client.clock.now()
}

// endedLocked reports whether the lock has ended, ending it first when its
// expiry is due at now but its timer has not fired yet: a process that was
// paused, or a busy runtime, runs timers late, and the lock must not look
// held, nor be refreshed back to life, once no heartbeat succeeded for
// holdFor. l.mu must be held.
func (l *Lock) endedLocked(now time.Time) bool {
	if l.client == nil {
		return true // the zero Lock was never held
	}
	if !l.ended && l.expiry != nil && !now.Before(l.refreshedAt.Add(l.client.holdFor())) {
		l.endLocked(errLeaseExpired)
	}
	return l.ended
}

// endLocked is end with l.mu held.
func (l *Lock) endLocked(err error) bool {
	if l.ended {
		return false
	}
	l.ended, l.endErr = true, err
	if l.expiry != nil {
		l.expiry.Stop()
	}
	if !errors.Is(err, errReleased) {
		// Counted before Done closes, so whoever wakes on Done sees it.
		l.client.stats.add(counterLost, 1)
		// A loss is worth a warning: whoever held the lock must stop. It is
		// no Error: the caller learns of it through Done and Err, and the
		// lock system worked as designed.
		l.client.log.Warn("lock lost", "lock", l.name, "owner", l.owner, "rvn", l.rvn,
			"since_refresh", l.client.clock.now().Sub(l.refreshedAt), "reason", err)
	}
	close(l.done)
	return true
}

// state returns the RVN, when the statement that set it began, and whether
// the lock has ended.
func (l *Lock) state() (held heldAt, ended bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ended = l.endedLocked(l.now())
	return heldAt{l.rvn, l.refreshedAt}, ended
}

// claimsRow reports whether l holds its row, is being acquired, or a
// release of it is running; got tells whether it was acquired.
func (l *Lock) claimsRow() (claims, got bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.endedLocked(l.now()) || l.freeing, l.done != nil
}

// claimsRowQuietly is claimsRow without running l's expiry, for callers
// that hold a mutex l's expiry may take.
func (l *Lock) claimsRowQuietly() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended || l.freeing
}

// withinLease bounds ctx by the time l's lease has left: a statement that
// holds l's op lock keeps the heartbeat off l, and past that time the lock
// is lost whatever the statement says.
func (l *Lock) withinLease(ctx context.Context) (context.Context, context.CancelFunc) {
	held, _ := l.state()
	return context.WithTimeout(ctx, held.at.Add(l.client.holdFor()).Sub(l.client.clock.now()))
}

// queue is the wait-room queue l's waiters join: its name, or its
// semaphore's.
func (l *Lock) queue() string {
	if l.sem != nil {
		return l.sem.markerName()
	}
	return l.name
}

// heldAt is a lock's RVN and when the statement that set it began.
type heldAt struct {
	rvn int64
	at  time.Time
}

// Name returns the lock's name.
func (l *Lock) Name() string {
	if l == nil {
		return ""
	}
	return l.name
}

// Data returns the data stored with the lock when it was acquired or read.
// The caller must not modify it.
func (l *Lock) Data() []byte {
	if l == nil {
		return nil
	}
	return l.data
}

// Owner returns the owner string stored with the lock: this client's for a
// lock it holds, the holder's for a lock read with Get or refused by
// FailIfLocked.
func (l *Lock) Owner() string {
	if l == nil {
		return ""
	}
	return l.owner
}

// RecordVersionNumber returns the lock's current record version number
// (RVN). Each heartbeat changes it. All RVNs of a table come from one
// sequence, so they only grow, whatever the name: every RVN a later holder
// of the name gets is larger than every RVN an earlier holder had. That
// makes it a fencing token for stores outside PostgreSQL: send it with each
// write, and have the store keep the largest token it saw per resource and
// refuse writes carrying a smaller one. A holder that lost the lock, and
// did not notice, is then refused as soon as its successor wrote once.
//
// The sequence is a BIGINT sequence with CYCLE: after 2^63-1 it wraps to 1,
// and a table dropped and created again restarts it at 1 too. Tokens then go
// backwards and a store must forget the largest ones it kept. At a million
// heartbeats a second the wrap takes about 290,000 years.
//
// A failover to an asynchronous standby that lost commits sends the
// sequence back too: the new primary hands out again RVNs the old one had
// handed out. Advance the sequence past them when promoting such a standby
// (docs/failover.md).
func (l *Lock) RecordVersionNumber() int64 {
	if l == nil {
		return 0
	}
	held, _ := l.state()
	return held.rvn
}

// IsReleased reports whether the lock is no longer held: it was released, it
// was lost, or it was never held (a row read with Get).
func (l *Lock) IsReleased() bool {
	if l == nil {
		return true
	}
	_, ended := l.state()
	return ended
}

// Done returns a channel that is closed when the lock is released or lost.
// It is never closed while the lock is held, and it is closed before
// another client can take the lock over. For a lock that was never held it
// is already closed.
func (l *Lock) Done() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endedLocked(l.now())
	if l.done == nil {
		return closedChan // the zero Lock was never held
	}
	return l.done
}

// closedChan is the Done channel of a Lock that was never held.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Err returns nil while the lock is held. Afterwards it tells why it ended:
// ErrLockAlreadyReleased wrapped with the reason.
func (l *Lock) Err() error {
	if l == nil {
		return ErrLockAlreadyReleased
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.endedLocked(l.now()) {
		return nil
	}
	if l.endErr == nil {
		return ErrLockAlreadyReleased
	}
	return l.endErr
}

// Close releases the lock, like Client.Release.
func (l *Lock) Close() error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	return l.client.Release(l)
}

// ReadOnlyLock is a lock row as read by GetAllLocks: it cannot be released.
type ReadOnlyLock Lock

// Name returns the lock's name.
func (l *ReadOnlyLock) Name() string { return (*Lock)(l).Name() }

// Data returns the data stored with the lock. The caller must not modify it.
func (l *ReadOnlyLock) Data() []byte { return (*Lock)(l).Data() }

// Owner returns the owner string stored with the lock.
func (l *ReadOnlyLock) Owner() string { return (*Lock)(l).Owner() }

// RecordVersionNumber returns the lock's record version number as read; 0
// for a row released with KeepOnRelease.
func (l *ReadOnlyLock) RecordVersionNumber() int64 { return (*Lock)(l).RecordVersionNumber() }
