package pglock

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SetMaxWatched sets how many names a Client remembers an RVN for, and
// returns a function that restores the default. Tests that shrink it must
// not run in parallel with others.
func SetMaxWatched(n int) (restore func()) {
	old := maxWatched
	maxWatched = n
	return func() { maxWatched = old }
}

// ManualClock is a clock the test moves by hand, for the protocol's
// simulation: leases pass when the test says so, and the timers due fire
// in order on the goroutine that moves it.
type ManualClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*manualTimer
}

type manualTimer struct {
	clock   *ManualClock
	at      time.Time
	f       func()
	stopped bool // under clock.mu
}

func (t *manualTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// NewManualClock returns a clock that reads start until moved.
func NewManualClock(start time.Time) *ManualClock { return &ManualClock{t: start} }

func (m *ManualClock) now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.t
}

func (m *ManualClock) afterFunc(d time.Duration, f func()) stopper {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{clock: m, at: m.t.Add(d), f: f}
	m.timers = append(m.timers, t)
	return t
}

// Now reads the clock.
func (m *ManualClock) Now() time.Time { return m.now() }

// Advance moves the clock d forward, firing the timers due on the way, in
// order of their due times. Advances from several goroutines at once (the
// fault schedules' statements move the clock too) never move it back.
func (m *ManualClock) Advance(d time.Duration) {
	m.mu.Lock()
	end := m.t.Add(d)
	m.mu.Unlock()
	for {
		m.mu.Lock()
		next := -1
		for i, t := range m.timers {
			if !t.stopped && !t.at.After(end) && (next < 0 || t.at.Before(m.timers[next].at)) {
				next = i
			}
		}
		if next < 0 {
			if end.After(m.t) { // an Advance running at the same time may have gone further
				m.t = end
			}
			m.timers = slices.DeleteFunc(m.timers, func(t *manualTimer) bool { return t.stopped })
			m.mu.Unlock()
			return
		}
		t := m.timers[next]
		t.stopped = true
		if t.at.After(m.t) {
			m.t = t.at
		}
		m.mu.Unlock()
		t.f()
	}
}

// NewSimulated makes a client on db for the protocol's simulation: it reads
// lease time from clock, and its heartbeats run only when Tick says so.
func NewSimulated(db *sql.DB, clock *ManualClock, opts ...ClientOption) (*Client, error) {
	c, err := UnsafeNew(db, opts...)
	if err != nil {
		return nil, err
	}
	c.clock = clock
	c.heartbeats.manual = true
	return c, nil
}

// Tick runs one heartbeat of every lock c holds, on the calling goroutine.
// It reports whether every statement succeeded.
func Tick(c *Client) bool { return c.heartbeats.tick() }

// LeaseOf returns the RVN l believes its row carries, and the time its
// lease counts from.
func LeaseOf(l *Lock) (rvn int64, since time.Time) {
	held, _ := l.state()
	return held.rvn, held.at
}

// ClassifyError exposes typeError to the external tests that check errors of
// both drivers are classified alike, from real server and network faults
// provoked outside the client's own statements.
var ClassifyError = typeError

// MarkUnsettled puts l in the state a heartbeat begun at start leaves when
// its statement committed but its answer was lost (the connection broke
// after the commit) and reading the row back failed too. That fault cannot be
// provoked on purpose with a real server (the window is microseconds wide),
// so tests reproduce its state: they move the row as the heartbeat would
// have, then call this.
func MarkUnsettled(l *Lock, start time.Time) { l.markUnsettled(start) }

// The reflection in reflect.go, exported for reflect_test.go, which runs it
// against the real drivers.
var (
	IsTrustedDriver = isTrustedDriver
	ConnString      = connString
	PoolListenSafe  = poolListenSafe
)

// NotificationWaiter is notificationWaiter.
func NotificationWaiter(conn any) (func(ctx context.Context) (channel, payload string, err error), bool) {
	return notificationWaiter(conn)
}

// Polling bounds of waiters, and how long a new LISTEN session waits for
// its probe, for the tests behind a pooler.
const (
	PollWithoutListener = pollWithoutListener
	ProbeBound          = probeBound
)

// AskReadBack starts a read-back of l's row as settle does, and returns
// the function that applies its answer (the row's RVN and owner) whenever
// it arrives.
func AskReadBack(l *Lock) func(rvn int64, owner string) {
	asked := l.asked()
	return func(rvn int64, owner string) {
		l.settleTo(rowState{rvn: sql.NullInt64{Int64: rvn, Valid: true}, owner: sql.NullString{String: owner, Valid: true}}, asked)
	}
}

// Closing reports whether Close was called on c.
func Closing(c *Client) bool { return c.closing.Err() != nil }

// WaitIdle waits until no statement or background release of c runs.
func WaitIdle(ctx context.Context, c *Client) error { return c.calls.Wait(ctx) }

// MissProbes makes the LISTEN sessions of c for which miss(n) is true (n
// counts c's sessions from 1) never see their probe, as a session whose
// probe is still unread when its bound ends. Call it before c waits.
func MissProbes(c *Client, miss func(session int) bool) {
	var sessions atomic.Int32
	c.waits.wrapDial = func(dial dialFunc) dialFunc {
		return func(ctx context.Context, channel string) (notifier, error) {
			n, err := dial(ctx, channel)
			if err != nil || !miss(int(sessions.Add(1))) {
				return n, err
			}
			return probeMisser{n}, nil
		}
	}
}

// probeMisser is a session that drops the notifications carrying probes.
type probeMisser struct{ notifier }

func (m probeMisser) wait(ctx context.Context) (string, error) {
	for {
		payload, err := m.notifier.wait(ctx)
		if err != nil || !strings.HasPrefix(payload, probePrefix) {
			return payload, err
		}
	}
}

// CounterSnapshots returns, for each of a client's counters, the snapshot
// of counters where only that one is set, to its number plus one.
func CounterSnapshots() []Stats {
	var out []Stats
	for k := range numCounters {
		var c counters
		c.add(k, int64(k)+1)
		var s Stats
		c.snapshot(&s)
		out = append(out, s)
	}
	return out
}

// QueueClient returns the id c's entries carry in the fair queue.
func QueueClient(c *Client) string { return c.fq.id }
