package main

import (
	"context"
	"time"

	"cirello.io/pglock"
)

// worker is one candidate of the demo's election.
type worker struct {
	d     *demo
	name  string
	value string
	e     *pglock.Election
}

// loop campaigns, leads until it resigns, loses or crashes, and campaigns
// again, until ctx ends or it crashed.
func (w *worker) loop(ctx context.Context) {
	defer w.d.wg.Done()
	for ctx.Err() == nil {
		heartbeat, stopHeartbeat := context.WithCancel(context.Background())
		t := time.Now()
		ld, err := w.e.Campaign(ctx, []byte(w.value), pglock.WithCustomHeartbeatContext(heartbeat))
		if err != nil {
			stopHeartbeat()
			if ctx.Err() == nil {
				w.d.say("%s: campaign failed, trying again: %v", w.name, err)
				time.Sleep(w.d.tick())
			}
			continue
		}
		won := time.Now()
		w.d.say("%s leads (campaigned %v; fencing token %d)", w.name, round(won.Sub(t)), ld.Lock().RecordVersionNumber())
		select {
		case w.d.events <- event{worker: w.name, at: won}:
		case <-ctx.Done():
		}
		end := w.lead(ctx, ld, stopHeartbeat)
		stopHeartbeat()
		switch end {
		case crashed:
			return
		case resigned:
			// Step back for a lease, so that another worker leads.
			t := time.NewTimer(w.d.lease)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// How a term as leader ended.
const (
	lost = iota
	resigned
	crashed
)

// lead works as the leader until told to resign or crash, or the leadership
// is lost, or ctx ends. It reports how the term ended.
func (w *worker) lead(ctx context.Context, ld *pglock.Leadership, stopHeartbeat func()) int {
	tick := time.NewTicker(w.d.tick())
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-tick.C:
			n++
			w.d.say("%s: tick %d, working as the leader", w.name, n)
		case <-ld.Done():
			w.d.say("%s lost the leadership: %v", w.name, ld.Err())
			return lost
		case <-w.d.kill:
			stopHeartbeat()
			crashedAt := time.Now()
			w.d.say("%s CRASHES: its heartbeat stops and it never releases the lock", w.name)
			w.d.wg.Add(1)
			go w.zombie(ctx, ld, crashedAt)
			return crashed
		case <-w.d.resign:
			w.resign(ld, "resigns, and steps back for a lease")
			return resigned
		case <-ctx.Done():
			w.resign(ld, "resigns: the demo is over")
			return resigned
		}
	}
}

// resign gives the leadership up, within --exit-timeout, and says how long
// it took.
func (w *worker) resign(ld *pglock.Leadership, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), w.d.g.exitTimeout)
	defer cancel()
	t := time.Now()
	if err := ld.Resign(ctx); err != nil {
		w.d.say("%s cannot resign: %v", w.name, err)
		return
	}
	w.d.say("%s %s (took %v)", w.name, why, round(time.Since(t)))
}

// zombie tells when the crashed leader's own clock ended its term: a leader
// that was stuck rather than dead would have stopped by then.
func (w *worker) zombie(ctx context.Context, ld *pglock.Leadership, crashedAt time.Time) {
	defer w.d.wg.Done()
	select {
	case <-ld.Done():
		w.d.say("  (%s's own lease ran out %v after its crash: had it been stuck, not dead, it would know now that it no longer leads)",
			w.name, round(time.Since(crashedAt)))
	case <-ctx.Done():
	}
}
