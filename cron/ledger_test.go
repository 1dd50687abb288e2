package cron

import (
	"sync"
	"testing"
	"time"
)

// ledger records the runs of a job in one process, whichever replica ran
// them: how many ran at once, and when each started.
type ledger struct {
	mu        sync.Mutex
	active    int         // runs in progress now
	overlaps  int         // runs that started while another was in progress
	starts    []time.Time // when each run started
	byReplica map[int]int // runs per replica
}

// begin records that replica started a run.
func (l *ledger) begin(replica int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active++
	if l.active > 1 {
		l.overlaps++
	}
	l.starts = append(l.starts, time.Now())
	if l.byReplica == nil {
		l.byReplica = make(map[int]int)
	}
	l.byReplica[replica]++
}

// end records that a run ended.
func (l *ledger) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
}

// ticks counts, among the whole seconds strictly between from and to (the
// ticks of a "* * * * * *" schedule that ran throughout), those at which
// no run started (empty) and those at which more than one did (repeated).
func (l *ledger) ticks(from, to time.Time) (ticks, empty, repeated int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for tick := from.Truncate(time.Second).Add(time.Second); !tick.Add(time.Second).After(to); tick = tick.Add(time.Second) {
		n := 0
		for _, s := range l.starts {
			if !s.Before(tick) && s.Before(tick.Add(time.Second)) {
				n++
			}
		}
		ticks++
		switch {
		case n == 0:
			empty++
		case n > 1:
			repeated++
		}
	}
	return ticks, empty, repeated
}

// TestLedger checks the ledger itself: two runs at once are an overlap,
// and a second with no run start is an empty tick.
func TestLedger(t *testing.T) {
	var l ledger
	from := time.Now()
	l.begin(0)
	l.begin(1)
	l.end()
	l.end()
	l.begin(2)
	l.end()
	if l.overlaps != 1 {
		t.Errorf("overlaps = %d, want 1", l.overlaps)
	}
	if _, empty, _ := l.ticks(from, from.Add(3*time.Second)); empty < 1 {
		t.Errorf("empty ticks = %d over seconds without runs, want at least 1", empty)
	}
}
