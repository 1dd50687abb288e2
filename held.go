package pglock

import "sync"

// heldLocks is the set of locks a Client is acquiring or believes it
// holds, with or without a heartbeat: what Close releases, what
// ForceRelease of a name held here ends first, and what tells a row of
// this client's owner that no Lock holds or may be taking (left by a
// statement whose reply was lost) from one a Lock of this client holds or
// is taking. A Lock joins it before its acquire statement is sent.
type heldLocks struct {
	mu    sync.Mutex
	locks map[*Lock]struct{}
	adds  int // since the last sweep
}

// sweepEvery is how many additions pass between sweeps of the locks that
// ended without a release (lost ones), so the set does not grow with them.
const sweepEvery = 1024

// add records l as held.
func (h *heldLocks) add(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.locks == nil {
		h.locks = make(map[*Lock]struct{})
	}
	h.locks[l] = struct{}{}
	h.adds++
	if h.adds < sweepEvery {
		return
	}
	h.adds = 0
	for old := range h.locks {
		if !old.claimsRowQuietly() {
			delete(h.locks, old)
		}
	}
}

// remove forgets l.
func (h *heldLocks) remove(l *Lock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.locks, l)
}

// named returns the locks of name still held or being released, and
// forgets those that ended; with name "", every such lock. Locks still
// being acquired are left out unless acquiring is set; then a permit of a
// semaphore that owns name counts too, whichever row it takes.
func (h *heldLocks) named(name string, acquiring bool) []*Lock {
	h.mu.Lock()
	all := make([]*Lock, 0, len(h.locks))
	for l := range h.locks {
		if name == "" || l.name == name || acquiring && l.sem.owns(name) {
			all = append(all, l)
		}
	}
	h.mu.Unlock()
	held := all[:0]
	for _, l := range all {
		switch claims, got := l.claimsRow(); {
		case !claims:
			h.remove(l)
		case got || acquiring:
			held = append(held, l)
		}
	}
	return held
}

// holdsOther reports whether a Lock of this client other than l holds
// name, is freeing its row, or is being acquired.
func (h *heldLocks) holdsOther(name string, l *Lock) bool {
	for _, o := range h.named(name, true) {
		if o != l {
			return true
		}
	}
	return false
}

// rename sets the name of l, a semaphore's permit, to the permit row it
// took; named reads names under h.mu.
func (h *heldLocks) rename(l *Lock, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l.name = name
}
