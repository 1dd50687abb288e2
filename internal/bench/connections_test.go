package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"cirello.io/pglock"
)

// BenchmarkFleetConnections counts the server connections of N clients,
// each with its own *sql.DB (up to 4 connections), from pg_stat_activity:
// idle after one Get, while each holds a lock, while each waits for a held
// name, and while each observes an election. It reports them per client.
//
//	go test -run '^$' -bench FleetConnections -benchtime 1x ./internal/bench
func BenchmarkFleetConnections(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			f := newFleet(b, 5*time.Second, n)
			f.connections(b)
		})
	}
}

// backends counts the client backends of this database, less the one that
// reads pg_stat_activity.
func (f *fleet) backends(b *testing.B) int {
	b.Helper()
	var n int
	err := f.stats.QueryRow(`SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`).Scan(&n)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// connections measures each state in turn. Each figure is the
// connections of the N clients, per client, at that moment: the pools'
// idle connections from earlier states stay open, as database/sql keeps
// them.
func (f *fleet) connections(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := f.backends(b)
	per := func(unit string, others int) {
		time.Sleep(time.Second) // let connections open and lingering pools close
		b.ReportMetric(float64(f.backends(b)-base-others)/float64(len(f.clients)), unit)
	}
	for _, c := range f.clients {
		if _, err := c.Get("none"); err == nil {
			b.Fatal("a lock nobody took")
		}
	}
	per("idle-conns/client", 0)
	var held []*pglock.Lock
	for i, c := range f.clients {
		l, err := c.Acquire(fmt.Sprintf("own-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		held = append(held, l)
	}
	per("holding-conns/client", 0)
	for i, l := range held {
		if err := f.clients[i].Release(l); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	before := f.backends(b)
	hl, err := f.holder.Acquire("held")
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	holder := f.backends(b) - before
	wctx, stopWaiting := context.WithCancel(ctx)
	for _, c := range f.clients {
		go func() { _, _ = c.AcquireContext(wctx, "held") }()
	}
	per("waiting-conns/client", holder)
	stopWaiting()
	for _, c := range f.clients {
		go func() {
			for range c.NewElection("observed").Observe(ctx) {
			}
		}()
	}
	per("observing-conns/client", holder)
	cancel()
	if err := f.holder.Release(hl); err != nil {
		b.Fatal(err)
	}
}
