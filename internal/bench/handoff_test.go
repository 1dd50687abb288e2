package bench

import (
	"context"
	"testing"
	"time"

	"cirello.io/pglock"
)

// BenchmarkHandoff measures, with the default 20 s lease, how long a waiter
// blocked in Acquire takes to get the lock once the holder releases it:
// from just before Release is called to AcquireContext returning in the
// waiter (so the release's own round trip is included). Holder and waiter
// are separate clients on separate pools, as separate processes would be.
// One handoff per iteration; the waiter has been blocked for blockedFor
// before each release. The same-client case has holder and waiter in one
// Client, as goroutines of one process.
func BenchmarkHandoff(b *testing.B) {
	b.Run("clients=2", func(b *testing.B) {
		hdb, wdb := openDB(b, 4), openDB(b, 4)
		table := newTable(b, hdb)
		benchmarkHandoff(b, client(b, hdb, table), client(b, wdb, table))
	})
	b.Run("clients=1", func(b *testing.B) {
		db := openDB(b, 4)
		c := client(b, db, newTable(b, db))
		benchmarkHandoff(b, c, c)
	})
}

func benchmarkHandoff(b *testing.B, holder, waiter *pglock.Client) {
	b.Helper()
	const blockedFor = 200 * time.Millisecond
	type result struct {
		l   *pglock.Lock
		err error
		at  time.Time
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	notes0 := waiter.Stats().Notifications
	for i := range b.N {
		l, err := holder.Acquire("handoff")
		if err != nil {
			b.Fatal(err)
		}
		waits := waiter.Stats().Waits
		got := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			l, err := waiter.AcquireContext(ctx, "handoff")
			got <- result{l, err, time.Now()}
		}()
		for waiter.Stats().Waits < waits+1 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(blockedFor)
		notes := waiter.Stats().Notifications
		released := time.Now()
		if err := holder.Release(l); err != nil {
			b.Fatal(err)
		}
		r := <-got
		cancel()
		if r.err != nil {
			b.Fatal(r.err)
		}
		lat = append(lat, r.at.Sub(released))
		if testing.Verbose() {
			b.Logf("handoff %d: %v notified %d", i, r.at.Sub(released), waiter.Stats().Notifications-notes)
		}
		if err := waiter.Release(r.l); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(quantile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(quantile(lat, 1)), "max-ms")
	b.ReportMetric(float64(waiter.Stats().Notifications-notes0)/float64(b.N), "notes/op")
}
