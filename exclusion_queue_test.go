package pglock_test

import (
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// The fair queue in the fault schedules. A schedule drawn as queued also
// has its clients wait: a waiting Acquire begins in the background, meets
// the same faults as every statement, and ends by taking its lock (which
// the schedule then holds, heartbeats and releases as any other), by its
// end (actEndWait), or by its client's Close. The oracles at the instant
// of every acquire hold for the queue's acquire as for the others.
//
// Once the schedule is over, with the faults stopped and nothing held,
// finishQueue checks what the queue promises: every wait that is still
// alive takes its lock in turn (none is lost), no entry stays behind once
// the waits ended, and waits that queue one after the other take the lock
// in that order.

// pendingWait is a waiting Acquire a schedule began, on its own goroutine.
type pendingWait struct {
	client int
	name   string
	c      *pglock.Client
	cancel context.CancelFunc
	done   chan struct{}
	lock   *pglock.Lock // what it took, under schedule.mu; nil until then, and when it gave up
	freed  bool         // the schedule released lock
}

func (w *pendingWait) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// startWait has client i begin to wait for name, unless it waits for it
// already.
func (s *schedule) startWait(i int, name string) {
	s.mu.Lock()
	for _, w := range s.waits {
		if w.client == i && w.name == name && !w.ended() {
			s.mu.Unlock()
			return
		}
	}
	s.mu.Unlock()
	s.addWait(i, name)
}

// addWait has client i begin to wait for name.
func (s *schedule) addWait(i int, name string) {
	s.mu.Lock()
	ctx, cancel := context.WithCancel(context.Background())
	w := &pendingWait{client: i, name: name, c: s.clients[i], cancel: cancel, done: make(chan struct{})}
	s.waits = append(s.waits, w)
	s.trace = append(s.trace, fmt.Sprintf("c%d waits for %s", i, name))
	s.mu.Unlock()
	go func() {
		defer close(w.done)
		defer cancel()
		l, err := w.c.AcquireContext(ctx, name, pglock.WithCustomHeartbeatContext(bg))
		if err != nil {
			s.log("c%d wait for %s ends: %v", i, name, err)
			return
		}
		s.mu.Lock()
		w.lock = l
		s.won = append(s.won, i)
		s.mu.Unlock()
		s.believe(i, name, l)
	}()
}

// endWait ends one of the waits still waiting, by its context.
func (s *schedule) endWait() {
	s.mu.Lock()
	var live []*pendingWait
	for _, w := range s.waits {
		if !w.ended() {
			live = append(live, w)
		}
	}
	if len(live) == 0 {
		s.mu.Unlock()
		return
	}
	w := live[s.rng.IntN(len(live))]
	s.trace = append(s.trace, fmt.Sprintf("c%d ends its wait for %s", w.client, w.name))
	s.mu.Unlock()
	w.cancel()
}

// finishQueue checks, once the schedule is over and nothing is held, that
// the fair queue lost no live waiter, left no entry behind, and keeps its
// order.
func (s *schedule) finishQueue(ctx context.Context) {
	if s.drainWaits(ctx, true) && s.sweptEntries(ctx) {
		s.checkOrder(ctx)
	}
}

// drainWaits releases the locks the schedule's waits take until every wait
// ended. With advance, the clock moves a fiftieth of a lease each
// millisecond, so that the entries of waits that died expire. A wait that
// is still waiting after drainBound of real time (and, with advance, after
// four leases of the clock) is lost, and fails the test.
func (s *schedule) drainWaits(ctx context.Context, advance bool) bool {
	start, deadline := s.clock.Now(), time.Now().Add(drainBound)
	for {
		pending := s.releaseWon(ctx)
		if pending == 0 {
			return true
		}
		if time.Now().After(deadline) && (!advance || s.clock.Now().Sub(start) > 4*s.lease) {
			s.fail("%d waits still wait %v after every lock was released (the clock moved %v)",
				pending, drainBound, s.clock.Now().Sub(start))
			s.mu.Lock()
			for _, w := range s.waits {
				w.cancel()
			}
			s.mu.Unlock()
			return false
		}
		if advance {
			s.clock.Advance(s.lease / 50)
		}
		time.Sleep(time.Millisecond)
	}
}

// drainBound is how long, in real time, the waits left may take to end.
const drainBound = 20 * time.Second

// releaseWon releases the locks the waits took that the schedule did not
// release yet, and returns how many waits are still waiting.
func (s *schedule) releaseWon(ctx context.Context) (pending int) {
	s.mu.Lock()
	var won []*pendingWait
	for _, w := range s.waits {
		switch {
		case w.lock != nil && !w.freed:
			w.freed = true
			won = append(won, w)
		case !w.ended():
			pending++
		}
	}
	s.mu.Unlock()
	for _, w := range won {
		_ = w.c.ReleaseContext(ctx, w.lock)
	}
	return pending
}

// sweptEntries checks that no entry of the schedule's names is left in
// the queue once every wait ended and other clients waited: the clients
// delete their entries, and retry the deletes that failed; the entries
// nobody deletes (those of a client closed while its deletes failed, or a
// join that reached the server after its wait ended) are deleted by the
// next waiter of another client they hold up, whom clients 0 and 1 play.
func (s *schedule) sweptEntries(ctx context.Context) bool {
	s.idle(ctx)
	s.clock.Advance(s.lease / 2) // the deletes that failed are tried again
	s.idle(ctx)
	for _, name := range s.names {
		if s.entries(name) > 0 {
			s.startWait(0, name)
			s.startWait(1, name)
		}
	}
	if !s.drainWaits(ctx, true) {
		return false
	}
	s.idle(ctx)
	for _, name := range s.names {
		if n := s.entries(name); n > 0 {
			s.fail("%d entries of %s are left in the queue after every wait ended: %s", n, name, s.describeEntries(name))
			return false
		}
	}
	return true
}

// idle waits until the statements the clients run in the background, such
// as the deletes of entries, returned.
func (s *schedule) idle(ctx context.Context) {
	for _, c := range s.clients {
		_ = pglock.WaitIdle(ctx, c)
	}
}

// entries counts the queue's entries of name, on client 0's pool, whose
// faults are stopped.
func (s *schedule) entries(name string) int {
	var n int
	err := s.dbs[0].db.QueryRow(`SELECT count(*) FROM `+quote(s.table+"_queue")+` WHERE name = $1`, name).Scan(&n)
	if err != nil {
		s.fail("cannot count the entries of %s: %v", name, err)
	}
	return n
}

// orderedWaits is how many waits checkOrder queues, alternately of clients
// 1 and 2.
const orderedWaits = 4

// checkOrder has client 0 hold a name of its own while clients 1 and 2
// queue for it, one wait after the other, and checks that they take it in
// that order once client 0 releases it. The clock stands still: the
// handoffs are the notifications', and no entry can expire.
func (s *schedule) checkOrder(ctx context.Context) {
	name := s.names[0] + "-order"
	l, err := s.clients[0].AcquireContext(ctx, name, pglock.FailIfLocked())
	if err != nil {
		s.fail("client 0 cannot take %s once the schedule is over: %v", name, err)
		return
	}
	s.mu.Lock()
	s.won = nil
	s.mu.Unlock()
	var want []int
	for k := range orderedWaits {
		i := 1 + k%2
		want = append(want, i)
		s.addWait(i, name)
		for deadline := time.Now().Add(drainBound); s.entries(name) < k+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				s.fail("wait %d (client %d) did not join the queue of %s", k, i, name)
				_ = s.clients[0].ReleaseContext(ctx, l)
				s.drainWaits(ctx, true)
				return
			}
		}
	}
	_ = s.clients[0].ReleaseContext(ctx, l)
	if !s.drainWaits(ctx, false) {
		return
	}
	s.mu.Lock()
	got := slices.Clone(s.won)
	s.mu.Unlock()
	if !slices.Equal(got, want) {
		s.fail("waits that queued as clients %v took %s as clients %v", want, name, got)
	}
}

// describeEntries tells the entries of name, and which of the clients
// made them.
func (s *schedule) describeEntries(name string) string {
	rows, err := s.dbs[0].db.Query(`SELECT ticket, client, record_version_number FROM `+quote(s.table+"_queue")+
		` WHERE name = $1 ORDER BY ticket`, name)
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			ticket, rvn int64
			client      string
		)
		if err := rows.Scan(&ticket, &client, &rvn); err != nil {
			return err.Error()
		}
		who := "a closed client"
		for i, c := range s.clients {
			if pglock.QueueClient(c) == client {
				who = fmt.Sprintf("c%d", i)
			}
		}
		out = append(out, fmt.Sprintf("ticket %d of %s (rvn %d)", ticket, who, rvn))
	}
	if err := rows.Err(); err != nil {
		out = append(out, err.Error())
	}
	return strings.Join(out, ", ")
}

// TestQueueLookDatesWhatItReadsFromItsReply has the holder heartbeat, on
// the manual clock, while a fair-queue waiter's look is in flight, so that
// the look reads an RVN committed eight tenths of a lease after the look
// began. The waiter must count that RVN's lease from the look's reply: it
// may not take the lock over while the holder's lease runs. (A waiter with
// data looks at the queue; one without tries instead, and its acquire
// statement dates what it reads from its reply.)
func TestQueueLookDatesWhatItReadsFromItsReply(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	w := newScheduleWorker(t, table)
	defer w.close()
	h, c := w.clients[0], w.clients[1]
	name := "look-dating-" + randomHex(4)
	held, err := h.Acquire(name, pglock.WithCustomHeartbeatContext(bg))
	require.NoError(t, err)
	var began, looked atomic.Bool
	w.dbs[1].cnt.SetFates(func(q string, _ []driver.NamedValue, _ bool) sqlcount.Fate {
		if strings.HasPrefix(q, "WITH kept AS") && began.CompareAndSwap(false, true) {
			defer looked.Store(true)
			assert.NoError(t, h.SendHeartbeat(bg, held), "the holder's heartbeat as the look begins")
			w.clock.Advance(scheduleLease * 8 / 10)
			assert.NoError(t, h.SendHeartbeat(bg, held), "the holder's heartbeat during the look")
		}
		return sqlcount.Fate{}
	})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	taken := make(chan *pglock.Lock, 1)
	go func() {
		l, err := c.AcquireContext(ctx, name, pglock.WithData([]byte("d"))) // with data, it looks before it tries
		if err != nil {
			t.Logf("the wait ended: %v", err)
		}
		taken <- l
	}()
	require.Eventually(t, func() bool {
		if !began.Load() { // the look moves the clock itself
			w.clock.Advance(scheduleLease / 100)
		}
		return looked.Load() || len(taken) > 0
	}, waitBound, time.Millisecond, "the waiter looked at the queue")
	require.True(t, looked.Load(), "the waiter looked at the queue before it ended")
	_, beat := pglock.LeaseOf(held)
	for !held.IsReleased() {
		select {
		case l := <-taken:
			if l != nil {
				t.Fatalf("the waiter took the lock over at rvn %d %v into the holder's lease of %v",
					l.RecordVersionNumber(), w.clock.Now().Sub(beat), scheduleLease)
			}
		default:
		}
		w.clock.Advance(scheduleLease / 50)
		time.Sleep(time.Millisecond)
	}
	cancel()
	_ = h.Release(held)
}
