package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/bounded"
)

// defaultExitTimeout is how long, by default, a command may take to release
// its lock, stop its client and close its connections once it is done.
const defaultExitTimeout = 5 * time.Second

// callGrace is how long a call whose context ended may still take to return
// its own error (lib/pq's "canceling statement") before it is left behind.
const callGrace = 50 * time.Millisecond

// newCalls returns the runner of the command's driver calls: none keeps
// pglock waiting after its context ended (see internal/bounded). A call
// still blocked when the exit path's deadline passes ends with the process,
// which exits right after.
func newCalls() *bounded.Runner { return &bounded.Runner{Grace: callGrace} }

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
		err := g.calls.Run(ctx, func(context.Context) error { return db.Close() }, nil)
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
	if err := g.calls.Wait(ctx); err != nil && g.calls.Stuck() > 0 {
		g.warn("exiting anyway (--exit-timeout %v): calls still waiting for PostgreSQL: %d: %v", g.exitTimeout, g.calls.Stuck(), err)
	}
}

// warn reports a problem that does not change the exit status, on one line.
func (g *globals) warn(format string, args ...any) {
	msg := strings.ReplaceAll(unprefixed(fmt.Sprintf(format, args...)), "\n", "; ")
	fmt.Fprintf(g.stderr, "pglock: warning: %s\n", msg)
}

// call runs f bounded by ctx (see newCalls).
func (g *globals) call(ctx context.Context, f func(context.Context) error) error {
	err := g.calls.Run(ctx, f, nil)
	if abandoned := (*bounded.AbandonedError)(nil); errors.As(err, &abandoned) {
		return fmt.Errorf("gave up waiting for PostgreSQL: %w", err)
	}
	return err
}
