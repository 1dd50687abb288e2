package cron

import (
	"context"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// TestThreeSchedulers runs one job every second for 10 seconds on three
// schedulers, each with a client and pool of its own, as three replicas
// would: no two runs overlap, and at most one tick runs nowhere.
func TestThreeSchedulers(t *testing.T) {
	const (
		replicas = 3
		runFor   = 10 * time.Second
		jobTakes = 300 * time.Millisecond
	)
	table := uniqueTable()
	var led ledger
	scheds := make([]*cron.Cron, replicas)
	for i := range scheds {
		lk := NewLocker(newClient(t, table))
		job := ContextFunc(func(ctx context.Context) {
			led.begin(i)
			defer led.end()
			select {
			case <-time.After(jobTakes):
			case <-ctx.Done():
				t.Errorf("replica %d lost the lock: %v", i, context.Cause(ctx))
			}
		})
		scheds[i] = cron.New(cron.WithSeconds())
		if _, err := scheds[i].AddJob("* * * * * *", cron.NewChain(lk.Wrap("every-second")).Then(job)); err != nil {
			t.Fatal(err)
		}
	}
	stopAll := func() {
		for _, s := range scheds {
			<-s.Stop().Done() // waits for the running job
		}
	}
	t.Cleanup(stopAll) // the clients close after, in their own cleanups

	from := time.Now()
	for _, s := range scheds {
		s.Start()
	}
	time.Sleep(runFor)
	to := time.Now()
	stopAll()

	ticks, empty, repeated := led.ticks(from, to)
	t.Logf("%d runs in %v (per replica %v); overlapping runs %d; of the %d ticks wholly inside, %d ran nowhere and %d more than once",
		len(led.starts), to.Sub(from).Round(time.Millisecond), led.byReplica, led.overlaps, ticks, empty, repeated)
	if led.overlaps != 0 {
		t.Errorf("%d runs overlapped another", led.overlaps)
	}
	if empty > 1 {
		t.Errorf("%d ticks ran nowhere, want at most 1", empty)
	}
}
