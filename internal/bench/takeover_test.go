package bench

import (
	"context"
	"database/sql/driver"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// BenchmarkCrashTakeover measures how long after a holder's last heartbeat
// a blocked waiter takes the lock over, in leases (500 ms lease). The
// holder heartbeats by hand a random number of times, then stops, as if it
// crashed. Two figures per takeover:
//   - from the moment the waiter first read the final RVN (the end of its
//     acquire statement that returned it, seen through the counting driver):
//     the design target is 1.00 to 1.25;
//   - from the start of the holder's last heartbeat, an upper bound of the
//     above that adds the waiter's poll interval (up to lease/4).
func BenchmarkCrashTakeover(b *testing.B) {
	const lease = 500 * time.Millisecond
	hdb := openDB(b, 4)
	table := newTable(b, hdb)
	wdb, cnt, err := sqlcount.Open(srv.DSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = wdb.Close() })
	holder := client(b, hdb, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
	waiter := client(b, wdb, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	var (
		mu    sync.Mutex
		seen  = map[int64]time.Time{} // RVN -> end of the first statement that returned it to the waiter
		bound = func(v driver.Value) int64 { n, _ := v.(int64); return n }
	)
	cnt.SetObserver(func(e sqlcount.Event) {
		if !strings.Contains(e.Query, "acquired AS") || len(e.Rows) != 1 {
			return
		}
		if ok, _ := e.Rows[0][0].(bool); ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if rvn := bound(e.Rows[0][1]); seen[rvn].IsZero() {
			seen[rvn] = e.End
		}
	})
	var fromSeen, fromBeat []float64
	b.ResetTimer()
	for range b.N {
		l, err := holder.Acquire("crash")
		if err != nil {
			b.Fatal(err)
		}
		type result struct {
			l   *pglock.Lock
			err error
			at  time.Time
		}
		got := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			l, err := waiter.AcquireContext(ctx, "crash")
			got <- result{l, err, time.Now()}
		}()
		lastBeat := time.Now()
		for range rand.N(4) {
			time.Sleep(lease / 5)
			lastBeat = time.Now()
			if err := holder.SendHeartbeat(context.Background(), l); err != nil {
				b.Fatal(err)
			}
		}
		final := l.RecordVersionNumber()
		// Crash: no more heartbeats.
		r := <-got
		cancel()
		if r.err != nil {
			b.Fatal(r.err)
		}
		<-l.Done()
		mu.Lock()
		s := seen[final]
		mu.Unlock()
		if s.IsZero() {
			b.Fatalf("the waiter never read RVN %d", final)
		}
		fromSeen = append(fromSeen, float64(r.at.Sub(s))/float64(lease))
		fromBeat = append(fromBeat, float64(r.at.Sub(lastBeat))/float64(lease))
		if err := waiter.Release(r.l); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cnt.SetObserver(nil)
	b.ReportMetric(minOf(fromSeen), "seen-min-leases")
	b.ReportMetric(maxOf(fromSeen), "seen-max-leases")
	b.ReportMetric(minOf(fromBeat), "beat-min-leases")
	b.ReportMetric(maxOf(fromBeat), "beat-max-leases")
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
