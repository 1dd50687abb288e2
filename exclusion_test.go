package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// TestExclusionUnderFaultSchedules runs seeded random schedules against a
// real PostgreSQL and checks the one property that matters: no two clients
// believe they hold the same name at the same instant, each by its own
// IsReleased (and so its own Done). It also checks what that property
// rests on, so that a flaw shows even when no other client happened to
// take the lock over at the wrong moment: a holder believes only an RVN
// that was committed, and counts its lease from no later than the moment
// that RVN could first be seen.
//
// Each schedule drives three clients on two names, one action at a time:
// acquire with FailIfLocked (or KeepOnRelease, or a Campaign, or, on a row
// of the schedule's semaphore of 1 or 2 permits, a permit), a batch
// heartbeat tick, SendHeartbeat, Release or Resign (with a live, a short or
// an ended context), Do (whose function returns, fails or panics), Close
// of a client (replaced by a new one), Guard in a transaction, time
// passing, or a delayed statement reaching the server. A third of the
// schedules also begin waits in the fair queue, in the background, and end
// them (exclusion_queue_test.go, which has the queue's own oracles).
//
// A holder's belief lasts from the moment its acquire returns until its
// Done closes, and the oracle samples it while statements are in flight
// too: at the instant any acquire commits, no other client may still
// believe it holds the name. No more clients than a semaphore has permits
// may believe they hold one of its permits. A statement that frees a row may run a
// rival's acquire between its commit and its reply, so that a release,
// Resign or Close whose reply is delayed overlaps another client's
// action. Every statement the clients send meets a fate chosen by the seed:
// it runs, fails before reaching the server, runs and commits but loses its
// reply (as a connection reset or as lib/pq's driver.ErrBadConn, which
// database/sql answers by sending the statement again), fails with a
// serialization failure, or is held back and run later, as a statement the
// client gave up on may still reach the server. Time is a manual clock the
// schedule moves, also in the middle of statements, so a lease passes in
// microseconds and the schedules are cheap.
//
// The faults are injected at the driver (internal/sqlcount) because their
// timing relative to a commit cannot be chosen with a real network fault.
//
// PGLOCK_SCHEDULES sets how many schedules run (2000; 200 under -short);
// PGLOCK_SCHEDULE_SEED replays from a seed a failure printed.
func TestExclusionUnderFaultSchedules(t *testing.T) {
	t.Parallel()
	schedules := 2000
	if testing.Short() {
		schedules = 200
	}
	n := envInt(t, "PGLOCK_SCHEDULES", schedules)
	base := uint64(envInt(t, "PGLOCK_SCHEDULE_SEED", int(time.Now().UnixNano()%1e9)))
	const workers = 8
	table, _ := newTable(t)
	var (
		next    atomic.Int64
		mu      sync.Mutex
		summary scheduleTotals
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		w := newScheduleWorker(t, table) // on the test's goroutine: it may fail the test
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.close()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				s := w.schedule(base + uint64(i))
				s.run()
				s.finish()
				mu.Lock()
				summary.add(s.totals)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d schedules from seed %d in %v: %d actions, %d faults injected, %d acquisitions (%d of permits), %d violations",
		summary.schedules, base, time.Since(start).Round(time.Millisecond), summary.actions, summary.faults,
		summary.acquisitions, summary.permits, summary.violations)
}

// envInt reads an integer from the environment, or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}

// scheduleTotals adds up what schedules did.
type scheduleTotals struct {
	schedules, actions, faults, acquisitions, permits, violations int
}

func (s *scheduleTotals) add(o scheduleTotals) {
	s.schedules++
	s.actions += o.actions
	s.faults += o.faults
	s.acquisitions += o.acquisitions
	s.permits += o.permits
	s.violations += o.violations
}

// scheduleClients is how many clients each schedule drives, each on a
// pool of its own so that each meets faults of its own.
const scheduleClients = 3

// schedDB is one client's pool and its fault injector.
type schedDB struct {
	db  *sql.DB
	cnt *sqlcount.Counter
}

// scheduleWorker runs schedules one after the other on the same clients,
// each on a pool of its own so that each meets faults of its own, and the
// same clock, which only moves forward. Each schedule uses names of its own.
type scheduleWorker struct {
	t       *testing.T
	table   string
	clock   *pglock.ManualClock
	dbs     []schedDB
	clients []*pglock.Client
}

// scheduleLease is the lease of the simulated clients, on the manual clock.
const scheduleLease = 10 * time.Second

func newScheduleWorker(t *testing.T, table string) *scheduleWorker {
	t.Helper()
	w := &scheduleWorker{t: t, table: table, clock: pglock.NewManualClock(time.Unix(1_000_000, 0))}
	for i := range scheduleClients {
		var d schedDB
		d.db, d.cnt = countedDB(t)
		d.cnt.SetRecycle(true)
		c, err := pglock.NewSimulated(d.db, w.clock, pglock.WithCustomTable(table),
			pglock.WithLeaseDuration(scheduleLease), pglock.WithHeartbeatFrequency(scheduleLease/4),
			pglock.WithOwner(fmt.Sprintf("%s-c%d-%s", t.Name(), i, randomHex(4))))
		require.NoError(t, err)
		w.dbs = append(w.dbs, d)
		w.clients = append(w.clients, c)
	}
	return w
}

func (w *scheduleWorker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range w.clients {
		_ = c.Close(ctx)
	}
	for _, d := range w.dbs {
		_ = d.db.Close()
		d.cnt.Close()
	}
}

// schedule is one seeded run. Each schedule draws its own mix (swarm
// testing): how often each client's statements fail and how often each
// client heartbeats, so that some schedules have a flaky holder that
// rarely refreshes while others look on, and others a quiet network.
type schedule struct {
	t         *testing.T
	table     string
	seed      uint64
	rng       *rand.Rand
	mu        sync.Mutex // guards rng, trace and totals: fates run inside statements
	clock     *pglock.ManualClock
	lease     time.Duration
	names     []string
	clients   []*pglock.Client
	dbs       []schedDB
	held      []map[string]*pglock.Lock // per client, the lock it believes it holds; under mu
	leaders   []map[string]*pglock.Leadership
	finishing bool  // the schedule is over: no more rival actions
	faultRate []int // per client, percent of statements that meet a fault
	tickRate  []int // per client, weight of its heartbeat ticks
	active    int   // how many of the clients act
	duel      bool  // one holder, one watcher (see pickDuel)
	steps     int   // how many actions the schedule takes
	trace     []string
	totals    scheduleTotals
	// committed is when each RVN of the schedule's names was first seen
	// committed, on the manual clock.
	committed map[int64]time.Time
	// sem and permits, when permits > 0, are a semaphore whose permit rows
	// are among names: acquiring one of them takes a permit, and the
	// oracle also checks that at most permits clients believe they hold
	// one.
	sem     string
	permits int
	// queued, when set, has the schedule's clients also wait in the fair
	// queue (exclusion_queue_test.go): waits, in the order they began.
	queued bool
	waits  []*pendingWait
	won    []int // the clients whose waits took a lock, in that order
}

// schedule starts the schedule of seed on w's clients.
func (w *scheduleWorker) schedule(seed uint64) *schedule {
	s := &schedule{
		t: w.t, table: w.table, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		clock: w.clock, lease: scheduleLease, dbs: w.dbs, clients: w.clients,
		names:     []string{fmt.Sprintf("s%d-a", seed), fmt.Sprintf("s%d-b", seed)},
		committed: map[int64]time.Time{},
	}
	s.names = s.names[:1+s.rng.IntN(2)]
	s.active = 2 + s.rng.IntN(2)
	s.steps = []int{40, 80}[s.rng.IntN(2)]
	for i, d := range w.dbs {
		s.held = append(s.held, map[string]*pglock.Lock{})
		s.leaders = append(s.leaders, map[string]*pglock.Leadership{})
		s.faultRate = append(s.faultRate, []int{2, 15, 40, 75}[s.rng.IntN(4)])
		s.tickRate = append(s.tickRate, []int{1, 5, 20}[s.rng.IntN(3)])
		d.cnt.SetFates(func(query string, args []driver.NamedValue, inTx bool) sqlcount.Fate {
			return s.fate(i, query, args)
		})
	}
	s.queued = s.rng.IntN(3) == 0
	if s.duel = s.rng.IntN(2) == 0; s.duel {
		s.names, s.active = s.names[:1], 2
		s.faultRate[0], s.faultRate[1] = []int{40, 75}[s.rng.IntN(2)], []int{2, 15}[s.rng.IntN(2)]
	} else if s.rng.IntN(2) == 0 {
		s.sem, s.permits = fmt.Sprintf("s%d-sem", seed), 1+s.rng.IntN(2)
		for p := range s.permits {
			s.names = append(s.names, fmt.Sprintf("%s#%d", s.sem, p))
		}
	}
	return s
}

// isPermit reports whether name is a permit row of the schedule's
// semaphore.
func (s *schedule) isPermit(name string) bool {
	return s.permits > 0 && strings.HasPrefix(name, s.sem+"#")
}

// fate decides what becomes of one statement of client i, and may move the
// clock before it runs and after.
func (s *schedule) fate(i int, query string, args []driver.NamedValue) sqlcount.Fate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rng.IntN(3) == 0 {
		s.clock.Advance(s.jitterLocked())
	}
	rival := isReleaseStatement(query) && s.rng.IntN(2) == 0
	f := sqlcount.Fate{After: func(rows [][]driver.Value) {
		s.recordCommits(query, rows)
		s.checkSuccession(i, query, args, rows)
		if rival {
			s.rivalAcquires(i, args)
		}
		s.mu.Lock()
		d := s.jitterLocked()
		s.mu.Unlock()
		s.clock.Advance(d)
	}}
	if s.rng.IntN(100) >= s.faultRate[i] {
		return f
	}
	switch r := s.rng.IntN(100); {
	case r < 25:
		f.Kind, f.Err = sqlcount.FailBefore, errReset
	case r < 50:
		f.Kind, f.Err = sqlcount.LoseReply, errReset
	case r < 60:
		f.Kind, f.Err = sqlcount.LoseReply, driver.ErrBadConn
	case r < 70:
		f.Kind, f.Err = sqlcount.FailBefore, &pq.Error{Code: "40001", Message: "injected"}
	case r < 85:
		f.Kind, f.Err = sqlcount.FailAtCommit, &pq.Error{Code: "40001", Message: "injected at commit"}
	default:
		f.Kind, f.Err = sqlcount.Delay, errReset
	}
	s.totals.faults++
	s.trace = append(s.trace, fmt.Sprintf("  c%d fault %d on %.30q", i, f.Kind, firstLine(query)))
	return f
}

// jitterLocked is how far the clock moves around one statement: mostly
// nothing or a little, sometimes much of a lease.
func (s *schedule) jitterLocked() time.Duration {
	switch s.rng.IntN(10) {
	case 0:
		return time.Duration(s.rng.Int64N(int64(s.lease)))
	case 1, 2, 3:
		return time.Duration(s.rng.Int64N(int64(s.lease / 10)))
	}
	return 0
}

func firstLine(q string) string {
	q = strings.TrimSpace(q)
	if i := strings.IndexByte(q, '\n'); i >= 0 {
		return q[:i]
	}
	return q
}

// run takes the schedule's actions, checking the property after each,
// until it fails.
func (s *schedule) run() {
	for range s.steps {
		s.step()
		if !s.check() {
			return
		}
	}
}

// Actions a schedule takes.
const (
	actAcquire = iota
	actTick
	actHeartbeat
	actRelease
	actGuard
	actDo
	actClose
	actAdvance
	actDelayed
	actWait
	actEndWait
)

// step takes one random action.
func (s *schedule) step() {
	s.mu.Lock()
	i, name, act := s.pick()
	s.totals.actions++
	l := s.held[i][name]
	if l != nil && l.IsReleased() {
		delete(s.held[i], name) // only a lock the client no longer believes it holds is forgotten
		delete(s.leaders[i], name)
		l = nil
	}
	c := s.clients[i]
	s.mu.Unlock()
	if l == nil && act != actAdvance && act != actDelayed && act != actTick && act != actDo && act != actClose &&
		act != actWait && act != actEndWait {
		act = actAcquire
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch act {
	case actAcquire:
		if l == nil {
			s.acquire(ctx, i, name)
		}
	case actTick:
		s.log("c%d tick", i)
		pglock.Tick(c)
	case actHeartbeat:
		s.log("c%d heartbeat %s: %v", i, name, c.SendHeartbeat(ctx, l))
	case actRelease:
		s.release(i, name, l)
	case actGuard:
		s.guard(ctx, i, l)
	case actDo:
		if l == nil {
			s.do(ctx, i, name)
		}
	case actClose:
		s.closeClient(i)
	case actAdvance:
		s.advance()
	case actWait:
		s.startWait(i, name)
	case actEndWait:
		s.endWait()
	default:
		s.runDelayed()
	}
}

// believe records that client i holds name with l.
func (s *schedule) believe(i int, name string, l *pglock.Lock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[i][name] = l
	s.totals.acquisitions++
	s.trace = append(s.trace, fmt.Sprintf("  c%d holds %s at rvn %d", i, name, l.RecordVersionNumber()))
}

// acquire has client i take name without waiting: plainly, keeping its
// row on release, or as a candidate of an election.
func (s *schedule) acquire(ctx context.Context, i int, name string) {
	s.mu.Lock()
	how, c := s.rng.IntN(4), s.clients[i]
	s.mu.Unlock()
	opts := []pglock.LockOption{pglock.FailIfLocked(), pglock.WithCustomHeartbeatContext(bg)}
	if s.isPermit(name) && how < 2 {
		s.acquirePermit(ctx, i, c, opts)
		return
	}
	switch how {
	case 0:
		s.log("c%d campaign %s", i, name)
		ld, err := c.NewElection(name).Campaign(ctx, []byte("v"), opts...)
		if err == nil {
			s.mu.Lock()
			s.leaders[i][name] = ld
			s.mu.Unlock()
			s.believe(i, name, ld.Lock())
		}
		return
	case 1:
		opts = append(opts, pglock.KeepOnRelease())
	}
	s.log("c%d acquire %s (keep %v)", i, name, how == 1)
	if l, err := c.AcquireContext(ctx, name, opts...); err == nil {
		s.believe(i, name, l)
	}
}

// acquirePermit has client i take a permit of the schedule's semaphore
// without waiting, whichever permit row it is.
func (s *schedule) acquirePermit(ctx context.Context, i int, c *pglock.Client, opts []pglock.LockOption) {
	l, err := c.NewSemaphore(s.sem, s.permits).Acquire(ctx, opts...)
	s.log("c%d acquire a permit of %s: %v", i, s.sem, err)
	if err != nil {
		return
	}
	s.mu.Lock()
	old := s.held[i][l.Name()]
	s.mu.Unlock()
	if old != nil && !old.IsReleased() {
		s.fail("c%d took permit %s it still believed it held", i, l.Name())
	}
	s.believe(i, l.Name(), l)
	s.mu.Lock()
	s.totals.permits++
	s.mu.Unlock()
}

// release has client i give up name, by Release or Resign, with a live, a
// short or an already ended context.
func (s *schedule) release(i int, name string, l *pglock.Lock) {
	s.mu.Lock()
	kind, c, ld := s.rng.IntN(3), s.clients[i], s.leaders[i][name]
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), []time.Duration{10 * time.Second, time.Millisecond, 0}[kind])
	defer cancel()
	var err error
	if ld != nil && ld.Lock() == l {
		err = ld.Resign(ctx)
	} else {
		err = c.ReleaseContext(ctx, l)
	}
	s.log("c%d release %s (context %s, resign %v): %v", i, name, []string{"live", "short", "ended"}[kind], ld != nil, err)
	if !l.IsReleased() {
		s.fail("c%d still holds %s after its release returned %v", i, name, err)
	}
}

// do runs Do on client i, whose function checks the beliefs while it holds
// the lock and then returns, fails or panics.
func (s *schedule) do(ctx context.Context, i int, name string) {
	s.mu.Lock()
	how, c := s.rng.IntN(3), s.clients[i]
	s.mu.Unlock()
	var done *pglock.Lock
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panicked: %v", r)
			}
		}()
		return c.Do(ctx, name, func(ctx context.Context, l *pglock.Lock) error {
			done = l
			s.believe(i, name, l)
			s.check()
			switch how {
			case 1:
				return errors.New("f failed")
			case 2:
				panic("f panics")
			}
			return nil
		}, pglock.FailIfLocked(), pglock.WithCustomHeartbeatContext(bg))
	}()
	s.log("c%d do %s (f %s): %v", i, name, []string{"returns", "fails", "panics"}[how], err)
	if done != nil && !done.IsReleased() {
		s.fail("c%d still holds %s after Do returned %v", i, name, err)
	}
}

// closeClient closes client i, whose locks must all end, and puts a new
// client in its place.
func (s *schedule) closeClient(i int) {
	s.mu.Lock()
	old := s.clients[i]
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := old.Close(ctx)
	c, nerr := pglock.NewSimulated(s.dbs[i].db, s.clock, pglock.WithCustomTable(s.table),
		pglock.WithLeaseDuration(scheduleLease), pglock.WithHeartbeatFrequency(scheduleLease/4),
		pglock.WithOwner(fmt.Sprintf("%s-c%d-%s", s.t.Name(), i, randomHex(4))))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trace = append(s.trace, fmt.Sprintf("c%d close: %v", i, err))
	if nerr != nil {
		s.t.Error(nerr)
		return
	}
	s.clients[i] = c
	for name, l := range s.held[i] {
		if !l.IsReleased() {
			s.t.Errorf("seed %d: c%d still holds %s after Close", s.seed, i, name)
		}
	}
}

// checkSuccession is the oracle at the instant a statement of client i
// committed: when it acquired a name, no other client may still believe
// it holds that name.
func (s *schedule) checkSuccession(i int, query string, args []driver.NamedValue, rows [][]driver.Value) {
	name, ok := acquiredName(query, args, rows)
	if !ok {
		return
	}
	s.mu.Lock()
	others := map[int]*pglock.Lock{}
	for j := range s.held {
		if l := s.held[j][name]; j != i && l != nil {
			others[j] = l
		}
	}
	s.mu.Unlock()
	for j, l := range others {
		if !l.IsReleased() {
			s.fail("c%d acquired %s while c%d still believed it held it at rvn %d", i, name, j, l.RecordVersionNumber())
		}
	}
}

// acquiredName returns the row an acquire statement (of a lock or of a
// semaphore's permit) took, from its rows.
func acquiredName(query string, args []driver.NamedValue, rows [][]driver.Value) (string, bool) {
	if len(args) == 0 {
		return "", false
	}
	name, _ := args[0].Value.(string)
	switch {
	case strings.HasPrefix(query, "WITH current AS"):
		return name, len(rows) > 0 && rows[0][0] == true
	case strings.HasPrefix(query, "WITH marker_new AS"): // kind, permit, rvn, ...
		for _, r := range rows {
			if r[0] == "acquired" {
				return fmt.Sprintf("%s%d", name, r[1]), true
			}
		}
	}
	return "", false
}

// rivalAcquires has another client try to take the name whose row a
// statement of client i just freed, before that statement's reply reaches
// client i.
func (s *schedule) rivalAcquires(i int, args []driver.NamedValue) {
	name, _ := args[0].Value.(string)
	s.mu.Lock()
	k := s.rng.IntN(s.active)
	free := k != i && s.held[k][name] == nil && !s.finishing
	c := s.clients[k]
	s.mu.Unlock()
	if !free {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.log("  c%d acquires %s while c%d's release is in flight", k, name, i)
	if l, err := c.AcquireContext(ctx, name, pglock.FailIfLocked(), pglock.WithCustomHeartbeatContext(bg)); err == nil {
		s.believe(k, name, l)
	}
}

// pick chooses the next action: which client, on which name, doing what.
// s.mu must be held.
func (s *schedule) pick() (i int, name string, act int) {
	name = s.names[s.rng.IntN(len(s.names))]
	if s.duel {
		return s.pickDuel(name)
	}
	i, r := s.rng.IntN(s.active), s.rng.IntN(100)
	heartbeats := s.rng.IntN(20) < s.tickRate[i] // some clients heartbeat rarely
	switch {
	case r < 28:
		return i, name, actAcquire
	case r < 46 && heartbeats:
		return i, name, actTick
	case r < 56 && heartbeats:
		return i, name, actHeartbeat
	case r < 64:
		return i, name, actRelease
	case r < 68:
		return i, name, actGuard
	case r < 71:
		return i, name, actDo
	case r < 72:
		return i, name, actClose
	case r < 80 && s.queued && !s.isPermit(name):
		return i, name, actWait
	case r < 82 && s.queued:
		return i, name, actEndWait
	case r < 96:
		return i, name, actAdvance
	}
	return i, name, actDelayed
}

// pickDuel chooses the next action of a duel: client 0 holds the name and
// heartbeats through faults, client 1 looks on, and time passes.
func (s *schedule) pickDuel(name string) (i int, _ string, act int) {
	switch r := s.rng.IntN(100); {
	case r < 30:
		return 0, name, actAdvance
	case r < 60:
		return 1, name, actAcquire
	case r < 62:
		return 0, name, actDelayed
	}
	switch r := s.rng.IntN(100); {
	case r < 45:
		return 0, name, actTick
	case r < 85:
		return 0, name, actHeartbeat
	case r < 92:
		return 0, name, actGuard
	}
	return 0, name, actRelease
}

// advance moves the clock by a step of a random size.
func (s *schedule) advance() {
	s.mu.Lock()
	d := []time.Duration{s.lease / 50, s.lease / 5, s.lease / 2, s.lease * 9 / 10}[s.rng.IntN(4)]
	s.mu.Unlock()
	s.log("advance %v", d)
	s.clock.Advance(d)
}

// guard runs Guard in a transaction of client i, and ends it.
func (s *schedule) guard(ctx context.Context, i int, l *pglock.Lock) {
	tx, err := s.dbs[i].db.BeginTx(ctx, nil)
	if err != nil {
		s.log("c%d guard %s: begin: %v", i, l.Name(), err)
		return
	}
	err = l.Guard(ctx, tx)
	s.log("c%d guard %s: %v, commit: %v", i, l.Name(), err, tx.Commit())
}

// runDelayed lets one statement held back by a fault reach the server.
func (s *schedule) runDelayed() {
	for _, d := range s.dbs {
		if d.cnt.Delayed() > 0 {
			query, rows, err := d.cnt.RunDelayed(0)
			s.log("delayed statement runs: %v", err)
			if err == nil {
				s.recordCommits(query, rows)
			}
			return
		}
	}
}

// recordCommits notes the RVNs a statement that committed wrote, from the
// rows it returned, with the time it committed.
func (s *schedule) recordCommits(query string, rows [][]driver.Value) {
	var (
		col    int
		permit bool // the first column tells an acquired permit's row
	)
	switch {
	case strings.HasPrefix(query, "WITH current AS"): // acquire, also the queue's: acquired, rvn, ...
		col = 1
	case strings.Contains(query, "unnest("): // the batch heartbeat: name, old, new, present
		col = 2
	case strings.HasPrefix(query, "WITH marker_new AS"): // a permit's acquire: kind, permit, rvn, ...
		col, permit = 2, true
	case strings.HasPrefix(query, "UPDATE") && strings.Contains(query, "RETURNING record_version_number"):
		col = 0
	default:
		return
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		if col == 1 && r[0] != true || permit && r[0] != "acquired" {
			continue // not acquired: the RVN is the holder's
		}
		if rvn, ok := r[col].(int64); ok {
			if _, seen := s.committed[rvn]; !seen {
				s.committed[rvn] = now
			}
		}
	}
}

// reported is set once an overlap was reported with its trace: later ones
// are only counted.
var reported atomic.Bool

// check fails the test when two clients believe they hold one name, or a
// holder's belief could let that happen (see unfounded), and reports
// whether all was well.
func (s *schedule) check() bool {
	ok := true
	s.mu.Lock()
	beliefs := make([]map[string]*pglock.Lock, len(s.held))
	for i := range s.held {
		beliefs[i] = maps.Clone(s.held[i])
	}
	s.mu.Unlock()
	permitHolders := 0
	for _, name := range s.names {
		var holders []string
		for i := range beliefs {
			l := beliefs[i][name]
			if l == nil || l.IsReleased() {
				continue
			}
			rvn, since := pglock.LeaseOf(l)
			holders = append(holders, fmt.Sprintf("c%d (rvn %d)", i, rvn))
			if why := s.unfounded(rvn, since); why != "" {
				ok = false
				s.fail("c%d holds %s at rvn %d, but %s", i, name, rvn, why)
			}
		}
		if len(holders) > 1 {
			ok = false
			s.fail("%s held by %v at once", name, holders)
		}
		if s.isPermit(name) {
			permitHolders += len(holders)
		}
	}
	if permitHolders > s.permits {
		ok = false
		s.fail("%d permits of %s held at once, more than its %d", permitHolders, s.sem, s.permits)
	}
	return ok
}

// unfounded says what is wrong with a belief in rvn with a lease counted
// from since, or "" when nothing is: the RVN must have been committed, and
// not before since, or a waiter who saw it commit could take the lock over
// before the holder's lease ends.
func (s *schedule) unfounded(rvn int64, since time.Time) string {
	s.mu.Lock()
	at, seen := s.committed[rvn]
	s.mu.Unlock()
	if !seen && s.landInFlight() {
		// A statement given up on by its caller commits on its own
		// goroutine, and its rows are recorded only once it returns: a
		// read-back may have seen its RVN first.
		s.mu.Lock()
		at, seen = s.committed[rvn]
		s.mu.Unlock()
	}
	switch {
	case !seen:
		return "that RVN was never committed"
	case since.After(at):
		return fmt.Sprintf("its lease counts from %v after that RVN was committed", since.Sub(at))
	}
	return ""
}

// landInFlight waits, for up to a few seconds of real time, until no
// statement of the schedule's clients is in flight, and reports whether
// any was.
func (s *schedule) landInFlight() bool {
	was := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		busy := false
		for _, d := range s.dbs {
			busy = busy || d.cnt.InFlight() > 0
		}
		if !busy {
			return was
		}
		was = true
	}
	return was
}

// fail reports a violation with the seed that replays it, and the trace of
// the first violation of the run.
func (s *schedule) fail(format string, args ...any) {
	s.mu.Lock()
	s.totals.violations++
	s.mu.Unlock()
	msg := fmt.Sprintf("seed %d: %s; replay with PGLOCK_SCHEDULE_SEED=%d PGLOCK_SCHEDULES=1",
		s.seed, fmt.Sprintf(format, args...), s.seed)
	if reported.CompareAndSwap(false, true) {
		s.mu.Lock()
		msg += "\n" + strings.Join(s.trace, "\n")
		s.mu.Unlock()
	}
	s.t.Error(msg)
}

func (s *schedule) log(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trace = append(s.trace, fmt.Sprintf(format, args...))
}

// finish stops the faults, lets the statements held back reach the server,
// and releases what is held, so the clients start the next schedule clean.
func (s *schedule) finish() {
	s.mu.Lock()
	s.finishing = true
	held := make([]map[string]*pglock.Lock, len(s.held))
	for i := range s.held {
		held[i] = maps.Clone(s.held[i])
	}
	s.mu.Unlock()
	for _, d := range s.dbs {
		d.cnt.SetFates(nil)
		for d.cnt.Delayed() > 0 {
			_, _, _ = d.cnt.RunDelayed(0)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, c := range s.clients {
		for _, l := range held[i] {
			_ = c.ReleaseContext(ctx, l)
		}
	}
	if s.queued {
		s.finishQueue(ctx)
	}
	for _, c := range s.clients {
		_ = pglock.WaitIdle(ctx, c) // releases freeing rows in the background
	}
}

// TestReadBackDatingOnManualClock replays case 1 of the read-back dating on
// the manual clock, step by step: heartbeat U1 commits but its reply and
// read-back are lost; another client sees U1's RVN; heartbeat U2 fails and
// its read-back finds U1's RVN. The holder must count its lease from U1,
// so it has given the lock up by the time the other client takes it over.
func TestReadBackDatingOnManualClock(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	w := newScheduleWorker(t, table)
	defer w.close()
	a, b := w.clients[0], w.clients[1]
	acnt := w.dbs[0].cnt
	script := func(fates ...sqlcount.FateKind) {
		var i atomic.Int32
		acnt.SetFates(func(string, []driver.NamedValue, bool) sqlcount.Fate {
			n := int(i.Add(1)) - 1
			if n >= len(fates) {
				return sqlcount.Fate{}
			}
			return sqlcount.Fate{Kind: fates[n], Err: errReset}
		})
	}
	name := "dating-" + randomHex(4)
	l, err := a.Acquire(name, pglock.WithCustomHeartbeatContext(bg))
	require.NoError(t, err)
	script(sqlcount.LoseReply, sqlcount.FailBefore) // U1 commits, unheard; its read-back fails
	require.Error(t, a.SendHeartbeat(bg, l))
	w.clock.Advance(scheduleLease / 10)
	_, err = b.Acquire(name, pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "b sees U1's RVN")
	w.clock.Advance(scheduleLease * 3 / 10)
	script(sqlcount.FailBefore) // U2 fails before the server; its read-back works
	require.Error(t, a.SendHeartbeat(bg, l))
	require.False(t, l.IsReleased(), "the read-back found the lock held")
	w.clock.Advance(scheduleLease*7/10 + scheduleLease/100)
	taken, err := b.Acquire(name, pglock.FailIfLocked())
	require.NoError(t, err, "b saw the RVN unchanged for a lease")
	require.True(t, l.IsReleased(), "a still counts itself the holder after b took the lock over")
	require.NoError(t, b.Release(taken))
}
