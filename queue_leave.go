package pglock

import (
	"context"
	"sync"

	"github.com/lib/pq"
)

// Leaving the fair queue. A wait that ends deletes its entry in the
// background. A delete that fails (the database cannot be reached) leaves
// the name as litter: the client deletes its entries of the name that no
// live wait holds a place lease later, and again until it succeeds. Close
// deletes every entry the client still has. An entry of a client that died
// is taken for dead by the waiters behind it (queue.go).

// litter is the names whose entries this client could not delete.
type litter struct {
	mu      sync.Mutex
	names   map[string]struct{}
	timer   stopper // the next sweep, while names is not empty
	stopped bool    // Close began: no more sweeps
}

// leaveQueue deletes w's entry, if it still has one, and those a failed
// join may have left, in the background: the caller whose wait ended does
// not wait for it. A wait that took its lock left its entry with it.
func (c *Client) leaveQueue(w *waiter) {
	ticket := c.waits.unseat(w)
	switch {
	case w.seat.unsure:
		c.calls.Spawn(func() { c.deleteStray(w.name) })
	case ticket != 0:
		c.calls.Spawn(func() { c.deleteEntry(w.name, ticket) })
	}
}

// deleteStray deletes the entries of name this client made for waits
// that no longer wait, within one attempt's timeout: a statement stuck
// on a dead connection is left behind.
func (c *Client) deleteStray(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
	defer cancel()
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			keep := append(pq.Int64Array{}, c.waits.tickets(name)...) // never NULL, which would keep all
			_, err := q.ExecContext(ctx, c.fq.sql.leaveStray, name, c.fq.id, keep)
			return err
		})
	}, nil)
	c.leftOrLitter(name, err)
}

// deleteEntry deletes the entry of name with ticket, within one attempt's
// timeout.
func (c *Client) deleteEntry(name string, ticket int64) {
	ctx, cancel := context.WithTimeout(context.Background(), c.attemptTimeout())
	defer cancel()
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			_, err := q.ExecContext(ctx, c.fq.sql.leave, name, ticket)
			return err
		})
	}, nil)
	c.leftOrLitter(name, err)
}

// leftOrLitter records name as litter when its delete failed, and sets
// the sweep a place lease from now, unless one is set or Close began.
func (c *Client) leftOrLitter(name string, err error) {
	if err == nil {
		return
	}
	c.log.Debug("cannot leave the lock's queue; trying again", "lock", name, "error", err)
	lt := &c.fq.litter
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.stopped {
		return
	}
	if lt.names == nil {
		lt.names = map[string]struct{}{}
	}
	lt.names[name] = struct{}{}
	if lt.timer == nil {
		lt.timer = c.clock.afterFunc(c.placeLease(), c.sweepLitter)
	}
}

// sweepLitter deletes again the entries of every littered name, on a
// goroutine Close joins.
func (c *Client) sweepLitter() {
	lt := &c.fq.litter
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.timer = nil
	if lt.stopped {
		return
	}
	names := lt.names
	lt.names = nil
	c.calls.Spawn(func() { // under mu: Close's stop comes before or after it
		for name := range names {
			c.deleteStray(name)
		}
	})
}

// leaveAll stops the sweeps and deletes every entry this client still
// has, once its waits ended: one statement, sent only by a client that
// joined the queue.
func (c *Client) leaveAll(ctx context.Context) {
	lt := &c.fq.litter
	lt.mu.Lock()
	lt.stopped = true
	if lt.timer != nil {
		lt.timer.Stop()
		lt.timer = nil
	}
	lt.mu.Unlock()
	if !c.fq.joined.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			_, err := q.ExecContext(ctx, c.fq.sql.leaveAll, c.fq.id)
			return err
		})
	}, nil)
	if err != nil {
		c.log.Debug("cannot leave the lock's queue on Close; the entries expire", "error", err)
	}
}
