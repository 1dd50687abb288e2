package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cirello.io/pglock"
)

// BenchmarkContention runs 100 goroutines contending for one name for 10 s
// (once, whatever b.N), spread over 4 clients as 4 processes would be, with
// the default lease and heartbeat. Each goroutine loops: acquire, hold for
// 1 ms, release, and at once tries again, so releasers compete with the
// waiters they wake. When the 10 s are up each goroutine finishes the wait
// it is in. It fails if any call returns an error or any goroutine never
// acquires; it reports acquisitions, the fewest acquisitions of a
// goroutine, and the longest wait.
func BenchmarkContention(b *testing.B) {
	const (
		goroutines = 100
		clients    = 4
		duration   = 10 * time.Second
		hold       = time.Millisecond
	)
	db := openDB(b, 40)
	table := newTable(b, db)
	cs := make([]*pglock.Client, clients)
	for i := range cs {
		cs[i] = client(b, db, table)
	}
	var (
		stop     atomic.Bool
		total    atomic.Int64
		maxWait  atomic.Int64
		counts   [goroutines]int
		errMu    sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[g%clients]
			for !stop.Load() {
				t0 := time.Now()
				l, err := c.AcquireContext(context.Background(), "hot")
				if err != nil {
					errMu.Lock()
					firstErr = fmt.Errorf("goroutine %d: %w", g, err)
					errMu.Unlock()
					return
				}
				w := int64(time.Since(t0))
				for m := maxWait.Load(); w > m && !maxWait.CompareAndSwap(m, w); m = maxWait.Load() {
				}
				counts[g]++
				total.Add(1)
				time.Sleep(hold)
				if err := c.Release(l); err != nil {
					errMu.Lock()
					firstErr = fmt.Errorf("goroutine %d: release: %w", g, err)
					errMu.Unlock()
					return
				}
			}
		}()
	}
	time.Sleep(duration)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	fewest := counts[0]
	for _, n := range &counts {
		fewest = min(fewest, n)
	}
	if fewest == 0 {
		b.Errorf("a goroutine never acquired the lock in %v", elapsed)
	}
	b.ReportMetric(float64(total.Load()), "acquisitions")
	b.ReportMetric(float64(fewest), "fewest-per-goroutine")
	b.ReportMetric(ms(time.Duration(maxWait.Load())), "max-wait-ms")
	b.ReportMetric(elapsed.Seconds(), "seconds")
}
