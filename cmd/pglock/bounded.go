package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cirello.io/pglock"
)

// defaultExitTimeout is how long, by default, a command may take to release
// its lock, stop its client and close its connections once it is done.
const defaultExitTimeout = 5 * time.Second

// callGrace is how long a call whose context ended may still take to return
// its own error (lib/pq's "canceling statement") before it is left behind.
const callGrace = 50 * time.Millisecond

// calls runs driver calls so that none keeps pglock waiting after its
// context ended: lib/pq, for one, keeps reading a silent connection after
// its context ended, and sends no timeout of its own while it connects. A
// call that does not return within callGrace of its context's end is left
// running on its goroutine and the caller gets the context's error. calls
// owns those goroutines: wait joins them, within a deadline, once the
// command returned. A call still blocked when the deadline passes (and
// wait's own goroutine, which waits for it) ends with the process, which
// exits right after.
type calls struct {
	wg    sync.WaitGroup
	stuck atomic.Int64 // calls left behind that have not returned yet
}

// Call states, for the handshake between a caller and its call.
const (
	callRunning int32 = iota
	callReturned
	callLeft
)

// run calls f(ctx) and returns its error, or an error wrapping ctx's once
// ctx ended and f did not return within callGrace.
func (cs *calls) run(ctx context.Context, f func(context.Context) error) error {
	var state atomic.Int32
	done := make(chan error, 1)
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		err := f(ctx)
		if state.CompareAndSwap(callRunning, callReturned) {
			done <- err
			return
		}
		cs.stuck.Add(-1)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(callGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if !state.CompareAndSwap(callRunning, callLeft) {
		return <-done // it returned just now
	}
	cs.stuck.Add(1)
	return fmt.Errorf("gave up waiting for PostgreSQL: %w", ctx.Err())
}

// wait waits until every call left behind returned, or ctx ends; it then
// reports how many are still blocked. Calls that returned are joined even
// when ctx has ended already: their goroutines are about to return.
func (cs *calls) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		cs.wg.Wait()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	if n := cs.stuck.Load(); n > 0 {
		return fmt.Errorf("calls still waiting for PostgreSQL: %d: %w", n, ctx.Err())
	}
	<-done
	return nil
}

// exitContext returns the context of the exit path: it ends --exit-timeout
// after the exit path began, when exitContext was first called. Every step
// of the way out shares that deadline, so together they take no longer.
func (g *globals) exitContext() (context.Context, context.CancelFunc) {
	g.exitOnce.Do(func() { g.exitBy = time.Now().Add(g.exitTimeout) })
	return context.WithDeadline(context.Background(), g.exitBy)
}

// closeClient stops c and closes db within --exit-timeout, whatever the
// network does. Commands defer it once they have a client.
func (g *globals) closeClient(db *sql.DB, c *pglock.Client) {
	ctx, cancel := g.exitContext()
	defer cancel()
	g.shutdown(ctx, db, c)
}

// shutdown stops c (when not nil: its heartbeats, its waiters and its own
// connections; a lock it still holds is released) and closes db, both
// within ctx. It warns about what it could not finish in time, and returns
// then; joinCalls deals with the calls left behind.
func (g *globals) shutdown(ctx context.Context, db *sql.DB, c *pglock.Client) {
	var errs []error
	if c != nil {
		if err := c.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cannot stop the lock client: %w", err))
		}
	}
	if db != nil {
		err := g.calls.run(ctx, func(context.Context) error { return db.Close() })
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot close the connections: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		g.warn("exiting without a clean stop (--exit-timeout %v): %v", g.exitTimeout, err)
	}
}

// joinCalls joins the calls left behind, within the exit path's deadline,
// and warns about those still blocked then: they end with the process,
// which exits right after. realMain runs it once the command returned.
func (g *globals) joinCalls() {
	ctx, cancel := g.exitContext()
	defer cancel()
	if err := g.calls.wait(ctx); err != nil {
		g.warn("exiting anyway (--exit-timeout %v): %v", g.exitTimeout, err)
	}
}

// warn reports a problem that does not change the exit status, on one line.
func (g *globals) warn(format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "; ")
	fmt.Fprintf(g.stderr, "pglock: warning: %s\n", msg)
}
