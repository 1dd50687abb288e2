package pglock_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

func TestSendHeartbeatBumpsRVNUntilLost(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	for range 3 {
		before := l.RecordVersionNumber()
		require.NoError(t, c.SendHeartbeat(bg, l))
		after := l.RecordVersionNumber()
		assert.NotEqual(t, before, after, "a heartbeat bumps the RVN")
		rvn, valid := rowRVN(t, db, table, "job")
		require.True(t, valid)
		assert.Equal(t, after, rvn, "the row carries the new RVN")
	}
	assert.False(t, l.IsReleased())

	stealRow(t, db, table, "job")
	err = c.SendHeartbeat(bg, l)
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "the RVN moved under the lock")
	assert.True(t, l.IsReleased(), "a failed heartbeat marks the lock released")
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed")
	}
	assert.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)

	// The row deleted under the lock is the same loss.
	l, err = c.Acquire("gone")
	require.NoError(t, err)
	mustExec(t, db, `DELETE FROM `+quote(table)+` WHERE name = 'gone'`)
	require.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.True(t, l.IsReleased())
}

func TestBackgroundHeartbeatBumpsRVNUntilLost(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	first := l.RecordVersionNumber()
	require.Eventually(t, func() bool {
		rvn, _ := rowRVN(t, db, table, "job")
		return rvn != first && rvn == l.RecordVersionNumber()
	}, waitBound, 20*time.Millisecond, "the heartbeat bumps the row's RVN and the lock follows")

	// A heartbeat that finds the row taken over ends the lock.
	stealRow(t, db, table, "job")
	select {
	case <-l.Done():
	case <-time.After(waitBound):
		t.Fatal("the background heartbeat did not notice the loss")
	}
	assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}

func TestHeartbeatRunsUnderCustomContext(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	thief := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))

	t.Run("outlives the acquire ctx", func(t *testing.T) {
		actx, acancel := context.WithCancel(bg)
		l, err := c.AcquireContext(actx, "a", pglock.WithCustomHeartbeatContext(bg))
		require.NoError(t, err)
		acancel()
		rvn := l.RecordVersionNumber()
		time.Sleep(lease + lease/2)
		assert.False(t, l.IsReleased(), "the heartbeat runs under its own ctx")
		assert.NotEqual(t, rvn, l.RecordVersionNumber(), "and keeps bumping the RVN")
		_, err = thief.Acquire("a", pglock.FailIfLocked())
		assert.ErrorIs(t, err, pglock.ErrNotAcquired)
		require.NoError(t, l.Close())
	})

	t.Run("cancelling it stops the heartbeat", func(t *testing.T) {
		hctx, hcancel := context.WithCancel(bg)
		l, err := c.Acquire("b", pglock.WithCustomHeartbeatContext(hctx))
		require.NoError(t, err)
		hcancel()
		select {
		case <-l.Done():
		case <-time.After(waitBound):
			t.Fatal("lock not lost a lease after its heartbeat stopped")
		}
		assert.True(t, l.IsReleased())
		assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
		l2, err := thief.AcquireContext(testCtx(t), "b")
		require.NoError(t, err, "a waiter takes the silent lock over")
		assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased, "the old holder's release fails")
		require.NoError(t, l2.Close())
	})
}

func TestHeartbeatKeepsWaitersOff(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	const lease = 2 * time.Second
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(250*time.Millisecond))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 2*lease)
	defer cancel()
	_, err = waiter.AcquireContext(ctx, "job")
	require.ErrorIs(t, err, pglock.ErrNotAcquired, "a heartbeating lock is never taken over")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, l.IsReleased())
	require.NoError(t, l.Close())
}

// TestBatchHeartbeatAppliesRowsAfterCommit: a batch heartbeat whose commit
// fails (a deferred trigger raises a serialization failure once, at commit)
// must not keep the RVNs of the rolled-back transaction: its retry's RVNs
// are the lock's, and the lock is not lost.
func TestBatchHeartbeatAppliesRowsAfterCommit(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	seq, fn := table+"_once", table+"_fail_once"
	mustExec(t, db, `CREATE SEQUENCE `+quote(seq))
	mustExec(t, db, `CREATE FUNCTION `+quote(fn)+`() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF nextval('`+seq+`') = 1 THEN
		RAISE EXCEPTION 'injected at commit' USING ERRCODE = '40001';
	END IF;
	RETURN NULL;
END $$`)
	defer mustExec(t, db, `DROP FUNCTION `+quote(fn)+`() CASCADE`)
	defer mustExec(t, db, `DROP SEQUENCE `+quote(seq))
	mustExec(t, db, `CREATE CONSTRAINT TRIGGER fail_once AFTER UPDATE ON `+quote(table)+`
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION `+quote(fn)+`()`)
	require.Eventually(t, func() bool {
		var n int64
		require.NoError(t, db.QueryRow(`SELECT last_value FROM `+quote(seq)).Scan(&n))
		return n >= 3 || l.IsReleased()
	}, waitBound, time.Millisecond, "heartbeats go on past the failed commit")
	rvn, valid := rowRVN(t, db, table, "n")
	assert.True(t, valid)
	assert.NoError(t, l.Err(), "the lock was lost while its row held RVN %d", rvn)
	assert.Equal(t, rvn, l.RecordVersionNumber(), "the lock knows its row's RVN")
	require.NoError(t, c.Release(l))
}

// TestHeartbeatOf10kLocksBatched holds 10,000 locks on one client and checks
// that each heartbeat tick costs at most ceil(N/1000) statements and that no
// lock misses its lease.
func TestHeartbeatOf10kLocksBatched(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 10,000 locks")
	}
	const (
		n     = 10000
		freq  = 500 * time.Millisecond
		lease = 5 * time.Second
	)
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	// Leave connections free for the heartbeat: with the pool exhausted by
	// acquirers it would queue for a connection behind them.
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))

	hctx, stopHeartbeats := context.WithCancel(bg)
	defer stopHeartbeats()
	locks := make([]*pglock.Lock, n)
	start := time.Now()
	require.NoError(t, runParallel(n, 4, func(i int) error {
		l, err := c.Acquire(fmt.Sprintf("lock-%05d", i), pglock.WithCustomHeartbeatContext(hctx))
		locks[i] = l
		return err
	}))
	t.Logf("acquired %d locks in %v; stats %+v", n, time.Since(start), c.Stats())

	reasons := map[string]int{}
	for _, l := range locks {
		if err := l.Err(); err != nil {
			reasons[err.Error()]++
		}
	}
	require.Empty(t, reasons, "locks lost while acquiring")

	var rec recorder
	cnt.SetObserver(rec.observe)
	cnt.Reset()
	time.Sleep(2 * lease)
	cnt.SetObserver(nil)
	events := rec.take()

	// Ticks are at least freq/4 apart (freq after a good tick, freq/4 after
	// a failed one); the statements of one tick follow each other at once or
	// overlap. Split the statements, in order of start, into ticks where a
	// statement starts over freq/8 after the previous one ended: a stall
	// inside a tick can only split it, never merge two.
	sort.Slice(events, func(i, j int) bool { return events[i].Start.Before(events[j].Start) })
	var ticks [][]sqlcount.Event
	for i, e := range events {
		if i == 0 || e.Start.Sub(events[i-1].End) > freq/8 {
			ticks = append(ticks, nil)
		}
		ticks[len(ticks)-1] = append(ticks[len(ticks)-1], e)
	}
	const perTick = (n + 999) / 1000
	beats := make(map[string]int, n) // heartbeats each lock got in the window
	for i, tick := range ticks {
		refreshed := 0
		for _, e := range tick {
			require.LessOrEqual(t, len(e.Rows), 1000, "one heartbeat statement carries at most 1000 locks")
			refreshed += len(e.Rows)
			for _, row := range e.Rows {
				if _, ok := row[2].(int64); ok { // a new RVN: refreshed
					beats[textValue(row[0])]++
				}
			}
		}
		require.LessOrEqual(t, len(tick), perTick, "tick %d sent %d statements for %d locks", i, len(tick), refreshed)
		t.Logf("tick %d: %d statements, %d locks, from %v for %v", i, len(tick), refreshed, tick[0].Start.Sub(start).Round(time.Millisecond), tick[len(tick)-1].End.Sub(tick[0].Start).Round(time.Millisecond))
	}
	fewest := -1
	for _, k := range beats {
		if fewest < 0 || k < fewest {
			fewest = k
		}
	}
	require.Len(t, beats, n, "locks refreshed in the window")
	require.GreaterOrEqual(t, fewest, 2, "the fewest refreshes a lock got in %v", 2*lease)
	st := c.Stats()
	t.Logf("%d statements in %d ticks over %v; stats %+v", len(events), len(ticks), 2*lease, st)
	require.Zero(t, st.Lost)

	// Every lock is still held with the RVN its row carries. Stop the
	// heartbeats so the RVNs stay put, and compare them with the rows.
	stopHeartbeats()
	start = time.Now()
	for prev := int64(-1); prev != c.Stats().Heartbeats; time.Sleep(2 * freq) {
		prev = c.Stats().Heartbeats
	}
	rows, err := db.Query(`SELECT name, record_version_number FROM ` + pq.QuoteIdentifier(table))
	require.NoError(t, err)
	defer rows.Close()
	stored := make(map[string]int64, n)
	for rows.Next() {
		var (
			name string
			rvn  int64
		)
		require.NoError(t, rows.Scan(&name, &rvn))
		stored[name] = rvn
	}
	require.NoError(t, rows.Err())
	require.Len(t, stored, n)
	wrong := 0
	for _, l := range locks {
		if l.IsReleased() || stored[l.Name()] != l.RecordVersionNumber() {
			wrong++
		}
	}
	require.Zero(t, wrong, "locks not held at the RVN of their row")
	t.Logf("checked in %v", time.Since(start))
	// The locks are left to expire: releasing 10,000 of them one by one
	// would double the test's time, and the table is dropped anyway.
}

// runParallel runs f(0..n-1) on at most limit goroutines and returns the
// first error. It returns once every call has returned.
func runParallel(n, limit int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// textValue reads a text value as the driver returned it.
func textValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
