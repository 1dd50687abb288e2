package pglock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// electionClients returns n clients on one fresh table, owned "cand-0",
// "cand-1", ..., each with its own pool so that they are as independent as
// separate processes. The table is dropped when t ends.
func electionClients(t *testing.T, n int, opts ...pglock.ClientOption) []*pglock.Client {
	t.Helper()
	return electionClientsOn(t, tableName(t), n, opts...)
}

// electionClientsOn is electionClients on the named table.
func electionClientsOn(t *testing.T, table string, n int, opts ...pglock.ClientOption) []*pglock.Client {
	t.Helper()
	clients := make([]*pglock.Client, n)
	for i := range clients {
		o := append([]pglock.ClientOption{pglock.WithCustomTable(table), pglock.WithOwner(fmt.Sprintf("cand-%d", i))}, opts...)
		c, err := pglock.New(openDB(t), o...)
		require.NoError(t, err)
		clients[i] = c
	}
	require.NoError(t, clients[0].CreateTable())
	t.Cleanup(func() { _ = clients[0].DropTable() })
	return clients
}

func TestElectionLeaderAndProclaim(t *testing.T) {
	t.Parallel()
	cs := electionClients(t, 2, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	e, watcher := cs[0].NewElection("leader-read"), cs[1].NewElection("leader-read")

	_, err := watcher.Leader(bg)
	require.ErrorIs(t, err, pglock.ErrNoLeader)

	ld, err := e.Campaign(bg, []byte("10.0.0.1:80"))
	require.NoError(t, err)
	got, err := watcher.Leader(bg)
	require.NoError(t, err)
	assert.Equal(t, "cand-0", got.Owner)
	assert.Equal(t, "10.0.0.1:80", string(got.Value))
	assert.Equal(t, ld.Lock().RecordVersionNumber(), got.RVN)

	require.NoError(t, ld.Proclaim(bg, []byte("10.0.0.1:81")))
	assert.Equal(t, "10.0.0.1:81", string(ld.Value()))
	got, err = watcher.Leader(bg)
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.1:81", string(got.Value))
	assert.Equal(t, ld.Lock().RecordVersionNumber(), got.RVN, "Proclaim must not bump the RVN")

	// Someone else leading makes Campaign with FailIfLocked fail at once,
	// and a Campaign whose ctx ends leaves nothing held.
	_, err = watcher.Campaign(bg, nil, pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	_, err = watcher.Campaign(ctx, nil)
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, ld.Resign(bg))
	<-ld.Done()
	require.ErrorIs(t, ld.Err(), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, ld.Resign(bg), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, ld.Proclaim(bg, []byte("x")), pglock.ErrLockAlreadyReleased)
	_, err = watcher.Leader(bg)
	require.ErrorIs(t, err, pglock.ErrNoLeader)

	// A leadership kept on release leaves its value but no leader.
	ld, err = e.Campaign(bg, []byte("kept"), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, ld.Resign(bg))
	_, err = watcher.Leader(bg)
	require.ErrorIs(t, err, pglock.ErrNoLeader)
	data, err := cs[1].GetData("leader-read")
	require.NoError(t, err)
	assert.Equal(t, "kept", string(data))
}

func TestElectionOneLeaderAtATime(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const candidates = 5
	cs := electionClients(t, candidates, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	var (
		leaders    atomic.Int32
		terms      atomic.Int32
		violations atomic.Int32
		wg         sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := c.NewElection("one-leader")
			for {
				ld, err := e.Campaign(ctx, []byte(fmt.Sprint(i)))
				if err != nil {
					assert.ErrorIs(t, err, pglock.ErrNotAcquired)
					return
				}
				if leaders.Add(1) != 1 {
					violations.Add(1)
				}
				terms.Add(1)
				// The database agrees on who leads.
				if got, err := e.Leader(bg); assert.NoError(t, err) {
					assert.Equal(t, fmt.Sprintf("cand-%d", i), got.Owner)
					assert.Equal(t, fmt.Sprint(i), string(got.Value))
				}
				time.Sleep(5 * time.Millisecond)
				select {
				case <-ld.Done():
					t.Errorf("cand-%d lost its leadership: %v", i, ld.Err())
				default:
				}
				leaders.Add(-1)
				assert.NoError(t, ld.Resign(bg))
			}
		}()
	}
	wg.Wait()
	t.Logf("%d terms among %d candidates in 2s", terms.Load(), candidates)
	require.Zero(t, violations.Load(), "two leaders at once")
	require.Greater(t, terms.Load(), int32(candidates), "leadership should change hands many times")
}

// TestElectionKilledLeaderIsReplaced kills a leader by never sending its
// heartbeat: its RVN stays what the follower first saw, so the follower
// takes over one lease after that sighting. The sighting happens after the
// follower's Campaign began, so the time from that call to the takeover is
// at least a lease; the 1.25-lease upper bound leaves a quarter lease
// (1s) for the follower's statements and scheduling on a loaded machine.
func TestElectionKilledLeaderIsReplaced(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = 4 * time.Second
	table := tableName(t)
	cs := electionClientsOn(t, table, 1, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/4))
	dead, err := pglock.New(openDB(t), pglock.WithCustomTable(table), pglock.WithOwner("dead"),
		pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	require.NoError(t, err)

	deadStart := time.Now()
	old, err := dead.NewElection("killed").Campaign(bg, []byte("dead"))
	require.NoError(t, err)
	oldLost := make(chan time.Duration, 1)
	go func() {
		select {
		case <-old.Done():
			oldLost <- time.Since(deadStart)
		case <-time.After(2 * lease):
			close(oldLost)
		}
	}()

	start := time.Now()
	ld, err := cs[0].NewElection("killed").Campaign(bg, []byte("alive"))
	took := time.Since(start)
	require.NoError(t, err)
	defer func() { assert.NoError(t, ld.Resign(bg)) }()
	t.Logf("follower took over %v after it began campaigning (lease %v)", took, lease)
	assert.GreaterOrEqual(t, took, lease, "taken over before a whole lease passed")
	assert.LessOrEqual(t, took, lease+lease/4, "not taken over within 1.25 leases")

	// The dead leader learns it lost on its own clock, at the end of its
	// lease, whatever the database says.
	lost, ok := <-oldLost
	require.True(t, ok, "the old leader still believes it leads")
	t.Logf("old leader saw its loss %v after it began campaigning; the follower led %v after it", lost, start.Add(took).Sub(deadStart))
	require.ErrorIs(t, old.Err(), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, old.Proclaim(bg, []byte("zombie")), pglock.ErrLockAlreadyReleased)
	got, err := cs[0].NewElection("killed").Leader(bg)
	require.NoError(t, err)
	assert.Equal(t, "cand-0", got.Owner)
	assert.Equal(t, "alive", string(got.Value))
}

func TestElectionResignHandsOverPromptly(t *testing.T) {
	t.Parallel()
	const lease = 30 * time.Second
	cs := electionClients(t, 2, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(5*time.Second))
	ld, err := cs[0].NewElection("resign").Campaign(bg, []byte("a"))
	require.NoError(t, err)

	next := make(chan *pglock.Leadership, 1)
	go func() {
		ld, err := cs[1].NewElection("resign").Campaign(bg, []byte("b"))
		assert.NoError(t, err)
		next <- ld
	}()
	require.Eventually(t, func() bool { return cs[1].Stats().Waits == 1 }, 10*time.Second, 5*time.Millisecond,
		"the second candidate never started waiting")
	time.Sleep(100 * time.Millisecond) // let it settle into its wait

	start := time.Now()
	require.NoError(t, ld.Resign(bg))
	ld2 := <-next
	took := time.Since(start)
	require.NotNil(t, ld2)
	t.Logf("handover after Resign took %v (lease %v)", took, lease)
	assert.Less(t, took, lease/10, "Resign did not hand over promptly")
	require.NoError(t, ld2.Resign(bg))
}

// TestElectionForceReleaseEndsLeadership steals a leadership with
// ForceRelease: a waiting candidate is woken at once, and the old leader
// learns of it on its next Proclaim.
func TestElectionForceReleaseEndsLeadership(t *testing.T) {
	t.Parallel()
	cs := electionClients(t, 3, pglock.WithLeaseDuration(30*time.Second), pglock.WithHeartbeatFrequency(5*time.Second))
	ld, err := cs[0].NewElection("forced").Campaign(bg, []byte("a"))
	require.NoError(t, err)
	next := make(chan *pglock.Leadership, 1)
	go func() {
		ld, err := cs[1].NewElection("forced").Campaign(bg, []byte("b"))
		assert.NoError(t, err)
		next <- ld
	}()
	require.Eventually(t, func() bool { return cs[1].Stats().Waits == 1 }, 10*time.Second, 5*time.Millisecond)

	start := time.Now()
	require.NoError(t, cs[2].ForceRelease(bg, "forced"))
	ld2 := <-next
	require.NotNil(t, ld2)
	t.Logf("takeover after ForceRelease took %v", time.Since(start))
	assert.Less(t, time.Since(start), 3*time.Second)

	require.ErrorIs(t, ld.Proclaim(bg, []byte("zombie")), pglock.ErrLockAlreadyReleased)
	<-ld.Done()
	got, err := cs[2].NewElection("forced").Leader(bg)
	require.NoError(t, err)
	assert.Equal(t, "b", string(got.Value))

	require.NoError(t, ld2.Resign(bg))
	require.ErrorIs(t, cs[2].ForceRelease(bg, "forced"), pglock.ErrLockNotFound)
}

// TestElectionObserveSeesEveryChange makes changes spaced well beyond the
// observer's 100ms poll (five times, for a loaded machine) and checks it
// reports each of them, in order.
func TestElectionObserveSeesEveryChange(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	cs := electionClients(t, 3, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	a, b := cs[0].NewElection("observed"), cs[1].NewElection("observed")

	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	var seen []string
	observed := make(chan struct{})
	go func() {
		defer close(observed)
		for l := range cs[2].NewElection("observed").Observe(ctx) {
			assert.NotZero(t, l.RVN)
			seen = append(seen, l.Owner+"="+string(l.Value))
		}
	}()

	const gap = 500 * time.Millisecond
	pause := func() { time.Sleep(gap) }
	pause()
	la, err := a.Campaign(bg, []byte("a1"))
	require.NoError(t, err)
	pause()
	require.NoError(t, la.Proclaim(bg, []byte("a2")))
	pause()
	require.NoError(t, la.Resign(bg))
	pause()
	lb, err := b.Campaign(bg, []byte("b1"))
	require.NoError(t, err)
	pause()
	require.NoError(t, lb.Proclaim(bg, []byte("b2")))
	pause()
	require.NoError(t, lb.Resign(bg))
	pause()
	// The same leader and value again, after a vacancy, is a new term.
	la, err = a.Campaign(bg, []byte("a2"))
	require.NoError(t, err)
	pause()
	require.NoError(t, la.Resign(bg))
	pause()
	cancel()
	<-observed
	require.Equal(t, []string{"cand-0=a1", "cand-0=a2", "cand-1=b1", "cand-1=b2", "cand-0=a2"}, seen)
}

// TestElectionObserversShareOneWatch: the Observe calls of one client on
// one election share one reader, which reads when a notification tells of
// a change and otherwise once a quarter lease: five observers cost the
// statements of one, and a Proclaim reaches all five long before a poll
// would have.
func TestElectionObserversShareOneWatch(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = 20 * time.Second // a poll every 5 s
	table, plain := newTable(t)
	db, cnt := countedDB(t)
	observer := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease))
	leader := sameTable(t, plain, table, pglock.WithLeaseDuration(lease))
	ld, err := leader.NewElection("shared").Campaign(testCtx(t), []byte("v0"))
	require.NoError(t, err)
	defer func() { _ = ld.Resign(bg) }()

	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	const observers = 5
	type seen struct {
		value string
		at    time.Time
	}
	got := make(chan seen, 100)
	var wg sync.WaitGroup
	for range observers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range observer.NewElection("shared").Observe(ctx) {
				got <- seen{string(l.Value), time.Now()}
			}
		}()
	}
	for range observers {
		require.Equal(t, "v0", (<-got).value)
	}
	require.Eventually(t, func() bool { return observer.Stats().Listening }, waitBound, time.Millisecond)
	before := cnt.Statements()
	time.Sleep(2 * time.Second)
	idle := cnt.Statements() - before
	for i := 1; i <= 3; i++ {
		value := fmt.Sprintf("v%d", i)
		start := time.Now()
		require.NoError(t, ld.Proclaim(bg, []byte(value)))
		for range observers {
			s := <-got
			require.Equal(t, value, s.value)
			assert.Less(t, s.at.Sub(start), lease/8, "a notification, not a poll, told the observers")
		}
	}
	t.Logf("%d observers on one client: %d statements in 2 s of quiet", observers, idle)
	assert.LessOrEqual(t, idle, int64(2), "one reader for all observers, polling once a quarter lease")
	cancel()
	wg.Wait()
}

// TestObserveRacingCloseEnds calls Observe while Close runs and after it
// returned: every channel closes, and Close joins whatever Observe started
// before it (the race detector checks the join).
func TestObserveRacingCloseEnds(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	_, table := newClientTable(t, db)
	for range 20 {
		c := sameTable(t, db, table)
		racing := make(chan []<-chan pglock.Leader)
		go func() {
			var chans []<-chan pglock.Leader
			for range 5 {
				chans = append(chans, c.NewElection("racing-close").Observe(context.Background()))
			}
			racing <- chans
		}()
		require.NoError(t, c.Close(testCtx(t)))
		chans := append(<-racing, c.NewElection("racing-close").Observe(context.Background()))
		for i, ch := range chans {
			timeout := time.After(waitBound)
		drain:
			for {
				select {
				case _, ok := <-ch:
					if !ok {
						break drain
					}
				case <-timeout:
					t.Fatalf("Observe channel %d did not close after Close", i)
				}
			}
		}
	}
}
