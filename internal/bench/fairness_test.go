package bench

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"cirello.io/pglock"
)

// BenchmarkFairness has 10 clients, each with its own *sql.DB, run 3
// goroutines each that acquire one name over and over for 30 s (3 s in a
// quick run), holding it 5 ms each time. It runs on a table with the fair
// queue (fair) and on one without (race, as tables made by the original
// library are), and reports the acquisitions of the least and the most
// served client, the longest wait, and the share of acquisitions that
// broke the order: taken while a goroutine that began waiting earlier
// still waited.
//
//	go test -run '^$' -bench Fairness -benchtime 1x ./internal/bench
func BenchmarkFairness(b *testing.B) {
	for _, mode := range []string{"race", "fair"} {
		b.Run(mode, func(b *testing.B) {
			runFairness(b, mode == "fair")
		})
	}
}

// fairnessLedger records who waits since when, and what each acquisition
// found.
type fairnessLedger struct {
	mu      sync.Mutex
	waiting map[int]time.Time // goroutine → when its wait began
	per     []int             // acquisitions per client
	total   int
	broken  int
	longest time.Duration
}

// began notes that goroutine g began to wait at t.
func (f *fairnessLedger) began(g int, t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waiting[g] = t
}

// took notes that goroutine g of client c acquired after waiting since
// its start.
func (f *fairnessLedger) took(g, c int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start := f.waiting[g]
	delete(f.waiting, g)
	f.per[c]++
	f.total++
	f.longest = max(f.longest, time.Since(start))
	for _, t := range f.waiting {
		if t.Before(start) {
			f.broken++
			return
		}
	}
}

func runFairness(b *testing.B, fair bool) {
	b.Helper()
	const clients, each, hold = 10, 3, 5 * time.Millisecond
	d := 30 * time.Second
	if quick {
		d = 3 * time.Second
	}
	admin := openDB(b, 1)
	table := newTable(b, admin)
	if !fair {
		dropQueue(b, admin, table)
	}
	led := &fairnessLedger{waiting: make(map[int]time.Time), per: make([]int, clients)}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for c := range clients {
		cl := client(b, openDB(b, each+2), table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
		for i := range each {
			g := c*each + i
			wg.Go(func() { contend(ctx, cl, g, c, hold, led) })
		}
	}
	wg.Wait()
	mn, mx := slices.Min(led.per), slices.Max(led.per)
	b.ReportMetric(float64(mn), "min-acq/client")
	b.ReportMetric(float64(mx), "max-acq/client")
	b.ReportMetric(ms(led.longest), "longest-wait-ms")
	b.ReportMetric(100*float64(led.broken)/float64(max(led.total, 1)), "order-broken-%")
	b.Logf("fair=%v: %d acquisitions in %v, per client %d to %d, longest wait %v, order broken %d times",
		fair, led.total, d, mn, mx, led.longest.Round(time.Millisecond), led.broken)
}

// contend has goroutine g of client c acquire name until ctx ends.
func contend(ctx context.Context, cl *pglock.Client, g, c int, hold time.Duration, led *fairnessLedger) {
	for ctx.Err() == nil {
		led.began(g, time.Now())
		l, err := cl.AcquireContext(ctx, "fair")
		if err != nil {
			return
		}
		led.took(g, c)
		time.Sleep(hold)
		if err := l.Close(); err != nil {
			panic(fmt.Sprint("release: ", err))
		}
	}
}

// dropQueue drops the fair queue of table: its waiters then race, as on a
// table made by the original library.
func dropQueue(b *testing.B, db *sql.DB, table string) {
	b.Helper()
	if _, err := db.Exec(`DROP TABLE ` + pq.QuoteIdentifier(table+"_queue")); err != nil {
		b.Fatal(err)
	}
}
