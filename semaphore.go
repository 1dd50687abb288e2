package pglock

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxPermits is the largest number of permits a Semaphore may have.
const MaxPermits = 1000

// permitsSuffix names a semaphore's marker row: "<name>#permits" holds the
// number of permits, as decimal text in its data, and a NULL RVN, so that
// no lock client sees it held.
const permitsSuffix = "#permits"

// Semaphore is a named counting semaphore: at most Permits() holders at a
// time. Permit i of semaphore "jobs" is the lock row "jobs#<i>", for i in
// 0..Permits()-1, with the same RVN and lease protocol as any lock; the row
// "jobs#permits" records the number of permits, so that clients that
// disagree on it are refused (ErrPermitsMismatch) instead of exceeding the
// smaller number. See docs/semaphore.md.
//
// Its methods are safe for concurrent use.
type Semaphore struct {
	client  *Client
	name    string
	permits int
	marker  []byte // the marker row's data: permits in decimal
	err     error  // why the semaphore cannot be used, reported by every call
}

// NewSemaphore returns the semaphore name with permits permits. An invalid
// name or number of permits (below 1 or above MaxPermits) is reported by
// the first call to Acquire or Holders, as an error wrapping
// ErrInvalidName.
func (c *Client) NewSemaphore(name string, permits int) *Semaphore {
	s := &Semaphore{client: c, name: name, permits: permits, marker: []byte(strconv.Itoa(permits))}
	switch {
	case permits < 1 || permits > MaxPermits:
		s.err = fmt.Errorf("%w: semaphore %q: %d permits, want 1 to %d", ErrInvalidName, name, permits, MaxPermits)
	case validName(name) != nil:
		s.err = fmt.Errorf("%w (a semaphore's name)", validName(name))
	case validName(name+permitsSuffix) != nil:
		s.err = fmt.Errorf("%w (the row %q of semaphore %q)", validName(name+permitsSuffix), name+permitsSuffix, name)
	}
	return s
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// Permits returns the number of permits the semaphore was made with.
func (s *Semaphore) Permits() int { return s.permits }

// markerName is the name of the row that records the number of permits;
// it is also the name the semaphore's waiters queue under in the wait room.
func (s *Semaphore) markerName() string { return s.name + permitsSuffix }

// prefix is what every permit row's name starts with.
func (s *Semaphore) prefix() string { return s.name + "#" }

// permitName is the row name of permit i.
func (s *Semaphore) permitName(i int) string { return s.prefix() + strconv.Itoa(i) }

// owns reports whether name is one of s's permit rows.
func (s *Semaphore) owns(name string) bool {
	if s == nil {
		return false
	}
	rest, ok := strings.CutPrefix(name, s.prefix())
	if !ok {
		return false
	}
	i, err := strconv.Atoi(rest)
	return err == nil && i >= 0 && i < s.permits && strconv.Itoa(i) == rest
}

// permitQueue returns the wait-room queue of the semaphore whose permit row
// is name ("jobs#3" belongs to "jobs#permits"), so that a release of any
// permit wakes the semaphore's waiters.
func permitQueue(name string) (string, bool) {
	i := strings.LastIndexByte(name, '#')
	if i < 0 || i == len(name)-1 {
		return "", false
	}
	for _, b := range name[i+1:] {
		if b < '0' || b > '9' {
			return "", false
		}
	}
	return name[:i] + permitsSuffix, true
}

// Acquire takes one permit, waiting for one as Client.AcquireContext waits
// for a lock, until ctx ends. The permit is a *Lock on the permit's row,
// with Done, Err, Guard, Release and Close as for any lock. The lock
// options apply as for a lock; with FailIfLocked, Acquire returns an error
// wrapping ErrNotAcquired, and no Lock, when every permit is held. A client
// whose number of permits differs from the one recorded for the name gets
// an error wrapping ErrPermitsMismatch and never holds a permit.
func (s *Semaphore) Acquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	if s.err != nil {
		return nil, &OtherError{&notAcquiredError{s.err}}
	}
	l := &Lock{client: s.client, sem: s, owner: s.client.owner, heartbeatContext: ctx, op: newOpLock()}
	for _, opt := range opts {
		if opt != nil {
			opt(l)
		}
	}
	return s.client.acquireNew(ctx, l)
}

// Holders reads the permits held now (or held by holders that died and
// whose lease has not been taken over yet), ordered by permit. The locks
// returned are not held. It returns an error wrapping ErrPermitsMismatch
// when the number of permits recorded for the name differs from s's.
func (s *Semaphore) Holders(ctx context.Context) ([]*ReadOnlyLock, error) {
	if s.err != nil {
		return nil, &OtherError{s.err}
	}
	c := s.client
	if err := c.checkTable(ctx, false); err != nil {
		return nil, err
	}
	rows, err := c.readNamed(ctx, append(s.permitNames(), s.markerName()))
	if err != nil {
		return nil, typeError(fmt.Errorf("pglock: cannot read the holders of semaphore %q: %w", s.name, err))
	}
	var held []*ReadOnlyLock
	for name, r := range rows {
		switch {
		case name == s.markerName():
			if err := s.checkMarker(r.data); err != nil {
				return nil, &OtherError{fmt.Errorf("pglock: %w", err)}
			}
		case r.rvn.Valid:
			held = append(held, (*ReadOnlyLock)(newEndedLock(c, name, r.owner.String, r.data, r.rvn.Int64, errNotHeld)))
		}
	}
	sort.Slice(held, func(i, j int) bool { return s.index(held[i].name) < s.index(held[j].name) })
	return held, nil
}

// index returns the permit number of one of s's permit rows.
func (s *Semaphore) index(name string) int {
	i, _ := strconv.Atoi(strings.TrimPrefix(name, s.prefix()))
	return i
}

// permitNames returns the names of every permit row.
func (s *Semaphore) permitNames() []string {
	names := make([]string, s.permits)
	for i := range names {
		names[i] = s.permitName(i)
	}
	return names
}

// checkMarker compares the marker row's data with s's number of permits.
func (s *Semaphore) checkMarker(data []byte) error {
	if bytes.Equal(data, s.marker) {
		return nil
	}
	return fmt.Errorf("semaphore %q has %q permits recorded in row %q, this client uses %d: %w",
		s.name, data, s.markerName(), s.permits, ErrPermitsMismatch)
}
