package pglock

import (
	"context"
	"sync"
	"time"
)

// Lock is a named lock held through a Client, or a row read with Get.
//
// Its methods are safe for concurrent use. A held Lock stays held until
// Release or Close, or until it is lost: someone took the row over, or no
// heartbeat succeeded for a whole lease. Done is closed at that moment.
type Lock struct {
	client           *Client
	name             string
	owner            string
	data             []byte
	failIfLocked     bool
	keepOnRelease    bool
	replaceData      bool
	heartbeatContext context.Context

	// opMu is held while a statement that depends on or changes this lock's
	// RVN is in flight: a heartbeat, a release, a Guard check. It keeps them
	// from racing each other; the background heartbeat skips a lock whose
	// opMu is busy.
	opMu sync.Mutex

	mu          sync.Mutex
	rvn         int64
	refreshedAt time.Time // when the statement that set rvn began (monotonic)
	expiry      *time.Timer
	ended       bool
	endErr      error
	done        chan struct{}
	releasing   bool // Release has run or is running
}

// LockOption reconfigures how a lock is acquired and released.
type LockOption func(*Lock)

// FailIfLocked makes Acquire return ErrNotAcquired at once instead of waiting
// while the lock is held by someone else. A lock whose holder this client has
// already watched stay silent for a whole lease is taken over all the same.
func FailIfLocked() LockOption {
	return func(l *Lock) { l.failIfLocked = true }
}

// WithData sets the data stored with a lock on a new row. A row kept with
// KeepOnRelease keeps its own data unless ReplaceData is given too. The
// slice is copied.
func WithData(data []byte) LockOption {
	return func(l *Lock) { l.data = append([]byte(nil), data...) }
}

// ReplaceData makes the data given with WithData overwrite whatever data the
// row holds when the lock is acquired.
func ReplaceData() LockOption {
	return func(l *Lock) { l.replaceData = true }
}

// KeepOnRelease keeps the row and its data when the lock is released: its
// record version number becomes NULL, so anyone may acquire it at once, and
// GetData still reads the data.
func KeepOnRelease() LockOption {
	return func(l *Lock) { l.keepOnRelease = true }
}

// WithCustomHeartbeatContext makes the background heartbeat of the lock run
// while ctx lives, instead of while the context given to AcquireContext
// lives. When that context ends the heartbeat stops, and the lock is lost a
// lease after its last heartbeat unless it is released first.
func WithCustomHeartbeatContext(ctx context.Context) LockOption {
	return func(l *Lock) { l.heartbeatContext = ctx }
}

// newEndedLock returns a Lock that is not held: a row read with Get, or the
// lock FailIfLocked could not take.
func newEndedLock(c *Client, name, owner string, data []byte, rvn int64, err error) *Lock {
	done := make(chan struct{})
	close(done)
	return &Lock{client: c, name: name, owner: owner, data: data, rvn: rvn,
		ended: true, endErr: err, releasing: true, done: done}
}

// hold marks a freshly acquired lock held with rvn, acquired by a statement
// that began at start, and arms its expiry a lease after start.
func (l *Lock) hold(rvn int64, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rvn, l.refreshedAt = rvn, start
	l.done = make(chan struct{})
	lease := l.client.leaseDuration
	l.expiry = time.AfterFunc(time.Until(start.Add(lease)), func() {
		l.end(errLeaseExpired)
	})
}

// refresh records a heartbeat that bumped the RVN to rvn and began at start.
// It reports false when the lock had already ended.
func (l *Lock) refresh(rvn int64, start time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return false
	}
	l.rvn = rvn
	if start.After(l.refreshedAt) {
		l.refreshedAt = start
		l.expiry.Reset(time.Until(start.Add(l.client.leaseDuration)))
	}
	return true
}

// end marks the lock released or lost, once, and closes Done.
func (l *Lock) end(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLocked(err)
}

// expireLocked ends the lock when its lease ran out by the clock, even if
// its expiry timer has not run yet: on a loaded machine the timer may run
// late, and the lock must not look held after its lease.
func (l *Lock) expireLocked() {
	if !l.ended && l.expiry != nil && !time.Now().Before(l.refreshedAt.Add(l.client.leaseDuration)) {
		l.endLocked(errLeaseExpired)
	}
}

func (l *Lock) endLocked(err error) {
	if l.ended {
		return
	}
	l.ended, l.endErr = true, err
	if l.expiry != nil {
		l.expiry.Stop()
	}
	close(l.done)
	if err != nil && err != errReleased {
		l.client.log.Debug("lock lost", "lock", l.name, "owner", l.owner, "rvn", l.rvn, "reason", err)
		l.client.stats.lost.Add(1)
	}
}

// state returns the RVN, when the statement that set it began, and whether
// the lock has ended.
func (l *Lock) state() (rvn int64, refreshedAt time.Time, ended bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
	return l.rvn, l.refreshedAt, l.ended
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

// Owner returns the owner string stored with the lock.
func (l *Lock) Owner() string {
	if l == nil {
		return ""
	}
	return l.owner
}

// RecordVersionNumber returns the lock's current record version number. Each
// heartbeat changes it. While the lock is held it is a fencing token: no
// other holder of the name ever sees the same number while the sequence does
// not wrap around (it is a BIGINT sequence with CYCLE, so it wraps only after
// 2^63 values).
func (l *Lock) RecordVersionNumber() int64 {
	if l == nil {
		return 0
	}
	rvn, _, _ := l.state()
	return rvn
}

// IsReleased reports whether the lock is no longer held: it was released, it
// was lost, or it was never held (a row read with Get).
func (l *Lock) IsReleased() bool {
	if l == nil {
		return true
	}
	_, _, ended := l.state()
	return ended
}

// Done returns a channel that is closed when the lock is released or lost.
// It is never closed while the lock is held. For a lock that was never held
// it is already closed.
func (l *Lock) Done() <-chan struct{} {
	if l == nil {
		done := make(chan struct{})
		close(done)
		return done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
	return l.done
}

// Err returns nil while the lock is held. Afterwards it tells why it ended:
// ErrLockAlreadyReleased wrapped with the reason.
func (l *Lock) Err() error {
	if l == nil {
		return ErrLockAlreadyReleased
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked()
	if !l.ended {
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
