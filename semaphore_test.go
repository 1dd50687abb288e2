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

// TestSemaphoreBasic takes every permit, is refused one more with
// FailIfLocked, sees the holders, and takes a permit again once one is
// released.
func TestSemaphoreBasic(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithOwner("me"))
	s := c.NewSemaphore("jobs", 3)
	require.Equal(t, "jobs", s.Name())
	require.Equal(t, 3, s.Permits())
	ctx := testCtx(t)
	var held []*pglock.Lock
	names := map[string]bool{}
	for i := 0; i < 3; i++ {
		l, err := s.Acquire(ctx, pglock.FailIfLocked(), pglock.WithData([]byte(fmt.Sprint("d", i))))
		require.NoError(t, err)
		require.NoError(t, l.Err())
		require.False(t, isClosed(l.Done()))
		names[l.Name()] = true
		held = append(held, l)
	}
	require.Equal(t, map[string]bool{"jobs#0": true, "jobs#1": true, "jobs#2": true}, names)
	l, err := s.Acquire(ctx, pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.Nil(t, l)

	holders, err := s.Holders(ctx)
	require.NoError(t, err)
	require.Len(t, holders, 3)
	for i, h := range holders {
		require.Equal(t, fmt.Sprint("jobs#", i), h.Name())
		require.Equal(t, "me", h.Owner())
	}
	all, err := c.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, all, 4, "three permits and the marker row")

	freed := held[1].Name()
	require.NoError(t, held[1].Close())
	require.True(t, isClosed(held[1].Done()))
	l, err = s.Acquire(ctx, pglock.FailIfLocked())
	require.NoError(t, err)
	require.Equal(t, freed, l.Name())
	held[1] = l
	for _, l := range held {
		require.NoError(t, l.Close())
	}
	holders, err = s.Holders(ctx)
	require.NoError(t, err)
	require.Empty(t, holders)
}

// TestSemaphoreBadPermits: a bad number of permits or name is an error of
// the first call, wrapping ErrInvalidName.
func TestSemaphoreBadPermits(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db)
	ctx := testCtx(t)
	for _, n := range []int{0, -1, pglock.MaxPermits + 1} {
		s := c.NewSemaphore("bad", n)
		_, err := s.Acquire(ctx)
		require.ErrorIs(t, err, pglock.ErrInvalidName, n)
		require.ErrorIs(t, err, pglock.ErrNotAcquired, n)
		_, err = s.Holders(ctx)
		require.ErrorIs(t, err, pglock.ErrInvalidName, n)
	}
	for _, name := range []string{"", string(make([]byte, 250))} {
		_, err := c.NewSemaphore(name, 2).Acquire(ctx)
		require.ErrorIs(t, err, pglock.ErrInvalidName)
	}
	l, err := c.NewSemaphore("big", pglock.MaxPermits).Acquire(ctx)
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestSemaphoreMismatchedPermits: a client whose number of permits differs
// from the one recorded is refused, and never holds a permit.
func TestSemaphoreMismatchedPermits(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db)
	other := sameTable(t, db, table)
	ctx := testCtx(t)
	l, err := c.NewSemaphore("jobs", 2).Acquire(ctx)
	require.NoError(t, err)
	for _, n := range []int{1, 3} {
		s := other.NewSemaphore("jobs", n)
		_, err = s.Acquire(ctx, pglock.FailIfLocked())
		require.ErrorIs(t, err, pglock.ErrPermitsMismatch, n)
		require.ErrorIs(t, err, pglock.ErrNotAcquired, n)
		_, err = s.Acquire(ctx) // no wait: refused at once
		require.ErrorIs(t, err, pglock.ErrPermitsMismatch, n)
		_, err = s.Holders(ctx)
		require.ErrorIs(t, err, pglock.ErrPermitsMismatch, n)
	}
	holders, err := c.NewSemaphore("jobs", 2).Holders(ctx)
	require.NoError(t, err)
	require.Len(t, holders, 1)
	require.NoError(t, l.Close())

	// A marker row that is not one (a plain lock of that name, without
	// data) is a mismatch too, not a reason to try again forever.
	m, err := c.Acquire("plain#permits")
	require.NoError(t, err)
	defer m.Close()
	_, err = c.NewSemaphore("plain", 2).Acquire(ctx)
	require.ErrorIs(t, err, pglock.ErrPermitsMismatch)
}

// TestSemaphoreHandoff: a waiter is woken by the release of a permit, well
// before a poll would find it.
func TestSemaphoreHandoff(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	const lease = 20 * time.Second // a poll every 5 s
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease))
	w := sameTable(t, db, table, pglock.WithLeaseDuration(lease))
	ctx := testCtx(t)
	s := c.NewSemaphore("jobs", 2)
	a, err := s.Acquire(ctx)
	require.NoError(t, err)
	b, err := s.Acquire(ctx)
	require.NoError(t, err)
	for _, first := range []*pglock.Lock{b, a} {
		got := make(chan *pglock.Lock, 1)
		go func() {
			l, err := w.NewSemaphore("jobs", 2).Acquire(ctx)
			assert.NoError(t, err)
			got <- l
		}()
		require.Eventually(t, func() bool { return w.Stats().Listening && w.Stats().Waits > 0 }, 10*time.Second, time.Millisecond)
		time.Sleep(100 * time.Millisecond) // the waiter is asleep
		start := time.Now()
		require.NoError(t, first.Close())
		l := <-got
		took := time.Since(start)
		require.NotNil(t, l)
		assert.Equal(t, first.Name(), l.Name())
		assert.Less(t, took, lease/8, "a notification, not a poll, woke the waiter")
		t.Logf("handoff of %s in %v", l.Name(), took)
		t.Cleanup(func() { _ = l.Close() })
	}
}

// TestSemaphoreStaleTakeover: a permit whose holder stopped its heartbeat is
// taken over after a lease, by a waiter and by a FailIfLocked that watched
// it.
func TestSemaphoreStaleTakeover(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	dead, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	w := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	ctx := testCtx(t)
	s := dead.NewSemaphore("jobs", 1)
	held, err := s.Acquire(ctx)
	require.NoError(t, err)

	start := time.Now()
	l, err := w.NewSemaphore("jobs", 1).Acquire(ctx, pglock.WithData([]byte("d")))
	require.NoError(t, err)
	took := time.Since(start)
	require.GreaterOrEqual(t, took, lease)
	require.Less(t, took, 3*lease)
	require.Equal(t, "jobs#0", l.Name())
	require.True(t, isClosed(held.Done()), "the dead holder counts its permit lost")
	t.Logf("taken over after %v", took)

	// FailIfLocked, watching for a lease, takes the stale permit too.
	sweeper := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	ss := sweeper.NewSemaphore("jobs", 1)
	_, err = ss.Acquire(ctx, pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	time.Sleep(lease + 100*time.Millisecond)
	got, err := ss.Acquire(ctx, pglock.FailIfLocked())
	require.NoError(t, err)
	require.Equal(t, "jobs#0", got.Name())
	require.Equal(t, int64(1), sweeper.Stats().Steals)
	require.NoError(t, got.Close())
}

// TestSemaphoreOneStatement: an acquire with a free permit is one
// statement, whatever the number of permits, and so is a refused
// FailIfLocked.
func TestSemaphoreOneStatement(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	ctx := testCtx(t)
	for _, n := range []int{1, 3, pglock.MaxPermits} {
		s := c.NewSemaphore(fmt.Sprint("sem", n), n)
		var held []*pglock.Lock
		for i := 0; i < min(n, 3); i++ {
			cnt.Reset()
			start := time.Now()
			l, err := s.Acquire(ctx)
			require.NoError(t, err)
			require.EqualValues(t, 1, cnt.Statements(), "acquire %d of %d", i, n)
			t.Logf("acquire %d of %d permits: %v", i, n, time.Since(start))
			held = append(held, l)
		}
		if n == 1 {
			cnt.Reset()
			_, err := s.Acquire(ctx, pglock.FailIfLocked())
			require.ErrorIs(t, err, pglock.ErrNotAcquired)
			require.EqualValues(t, 1, cnt.Statements(), "refused FailIfLocked")
		}
		for _, l := range held {
			cnt.Reset()
			require.NoError(t, l.Close())
			require.EqualValues(t, 1, cnt.Statements(), "release")
		}
	}
}

// TestSemaphoreConcurrency: 30 goroutines over 3 clients take and release
// permits of a semaphore of 3; never more than 3 believe they hold one.
func TestSemaphoreConcurrency(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db)
	clients := []*pglock.Client{c, sameTable(t, db, table), sameTable(t, db, table)}
	ctx := testCtx(t)
	const permits = 3
	var (
		mu       sync.Mutex
		holders  = map[*pglock.Lock]bool{}
		peak     int
		acquired atomic.Int64
	)
	// believers counts the locks whose Done is still open.
	believers := func() int {
		n := 0
		for l := range holders {
			if !isClosed(l.Done()) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 30; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := clients[g%len(clients)].NewSemaphore("jobs", permits)
			for time.Now().Before(deadline) {
				l, err := s.Acquire(ctx)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				holders[l] = true
				n := believers()
				peak = max(peak, n)
				mu.Unlock()
				assert.LessOrEqual(t, n, permits)
				acquired.Add(1)
				time.Sleep(time.Millisecond)
				mu.Lock()
				delete(holders, l)
				mu.Unlock()
				assert.NoError(t, l.Close())
			}
		}()
	}
	wg.Wait()
	t.Logf("%d acquisitions, at most %d believers at once", acquired.Load(), peak)
	require.LessOrEqual(t, peak, permits)
	require.Greater(t, acquired.Load(), int64(30))
}

// TestSemaphoreIdlePolling: while notifications arrive, a client whose
// goroutines wait for a full semaphore sends at most 4 statements a lease,
// however many of them wait, and a waiter with data polls with plain reads
// that do not carry it.
func TestSemaphoreIdlePolling(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	holder, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/4))
	ctx := testCtx(t)
	const permits = 5
	s := holder.NewSemaphore("jobs", permits)
	for i := 0; i < permits; i++ {
		l, err := s.Acquire(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
	}
	cdb, cnt := countedDB(t)
	w := unsafeClient(t, cdb, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.NewSemaphore("jobs", permits).Acquire(wctx, pglock.WithData([]byte("payload")))
			assert.ErrorIs(t, err, pglock.ErrNotAcquired)
		}()
	}
	require.Eventually(t, func() bool { return w.Stats().Listening && w.Stats().Waits == 3 }, 10*time.Second, time.Millisecond)
	time.Sleep(lease / 2)
	before := cnt.Statements()
	var rec recorder
	cnt.SetObserver(rec.observe)
	time.Sleep(2 * lease)
	cnt.SetObserver(nil)
	idle := cnt.Statements() - before
	cancel()
	for _, e := range rec.take() {
		assert.NotContains(t, e.Query, "marker_new", "a poll sent the acquire statement and its data")
	}
	wg.Wait()
	t.Logf("3 waiters on one client: %d statements in 2 leases", idle)
	assert.LessOrEqual(t, idle, int64(2*4+1), "the queue head polls once a quarter lease")
}

// TestSemaphoreErrorMessages: errors name the semaphore and what is wrong.
func TestSemaphoreErrorMessages(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db)
	ctx := testCtx(t)
	l, err := c.NewSemaphore("jobs", 2).Acquire(ctx)
	require.NoError(t, err)
	defer l.Close()
	_, err = c.NewSemaphore("jobs", 3).Acquire(ctx)
	require.ErrorIs(t, err, pglock.ErrPermitsMismatch)
	require.Contains(t, err.Error(), `cannot acquire a permit of semaphore "jobs"`)
	require.Contains(t, err.Error(), `"2" permits recorded in row "jobs#permits", this client uses 3`)
	_, err = c.NewSemaphore("jobs", 0).Acquire(ctx)
	require.Contains(t, err.Error(), `semaphore "jobs": 0 permits, want 1 to 1000`)
}
