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
// before each release.
func BenchmarkHandoff(b *testing.B) {
	const blockedFor = 200 * time.Millisecond
	hdb, wdb := openDB(b, 4), openDB(b, 4)
	table := newTable(b, hdb)
	holder := client(b, hdb, table)
	waiter := client(b, wdb, table)
	type result struct {
		l   *pglock.Lock
		err error
		at  time.Time
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		l, err := holder.Acquire("handoff")
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			l, err := waiter.AcquireContext(ctx, "handoff")
			got <- result{l, err, time.Now()}
		}()
		for waiter.Stats().Waits < int64(i+1) {
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
	b.ReportMetric(float64(waiter.Stats().Notifications)/float64(b.N), "notes/op")
}
