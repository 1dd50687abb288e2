package pglock_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// TestPerfOneStatementPerOperation counts the statements each operation
// sends: an uncontended acquire, one background heartbeat of one lock, a
// SendHeartbeat and a release each cost exactly one.
func TestPerfOneStatementPerOperation(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	const freq = 200 * time.Millisecond
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(freq))

	// Acquire, uncontended: a fresh row.
	hctx, stopHeartbeat := context.WithCancel(bg)
	defer stopHeartbeat()
	cnt.Reset()
	l, err := c.Acquire("one", pglock.WithCustomHeartbeatContext(hctx))
	require.NoError(t, err)
	require.EqualValues(t, 1, cnt.Statements(), "acquire")

	// Background heartbeat: let it tick at least once, then stop it, so
	// that the count no longer moves, and compare.
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= 1 }, 10*time.Second, time.Millisecond)
	stopHeartbeat()
	time.Sleep(3 * freq) // the next tick drops the lock without a statement
	// A statement counts when sent, a heartbeat when it returned: wait for
	// the last one in flight, if any, then for nothing more to happen.
	var beats int64
	require.Eventually(t, func() bool {
		beats = c.Stats().Heartbeats
		return cnt.Statements() == 1+beats
	}, 10*time.Second, time.Millisecond, "one statement per background heartbeat of one lock")
	time.Sleep(2 * freq)
	require.Equal(t, 1+beats, cnt.Statements(), "the heartbeat stopped with its context")
	require.Equal(t, beats, c.Stats().Heartbeats)

	cnt.Reset()
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.EqualValues(t, 1, cnt.Statements(), "SendHeartbeat")

	// A contended FailIfLocked attempt.
	other := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	cnt.Reset()
	_, err = other.Acquire("one", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.EqualValues(t, 1, cnt.Statements(), "contended FailIfLocked")

	cnt.Reset()
	require.NoError(t, c.Release(l))
	require.EqualValues(t, 1, cnt.Statements(), "release")

	// KeepOnRelease: acquire over a kept row and release keeping it.
	nohb := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	l, err = nohb.Acquire("kept", pglock.KeepOnRelease(), pglock.WithData([]byte("d")))
	require.NoError(t, err)
	require.NoError(t, nohb.Release(l))
	cnt.Reset()
	l, err = nohb.Acquire("kept", pglock.KeepOnRelease())
	require.NoError(t, err)
	require.Equal(t, []byte("d"), l.Data())
	require.EqualValues(t, 1, cnt.Statements(), "acquire over a kept row")
	cnt.Reset()
	require.NoError(t, nohb.Release(l))
	require.EqualValues(t, 1, cnt.Statements(), "release keeping the row")
}

// TestPerfHeartbeat10kLocks holds 10,000 locks on one client and checks that
// each heartbeat tick costs at most ceil(N/1000) statements and that no lock
// misses its lease.
func TestPerfHeartbeat10kLocks(t *testing.T) {
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
