package pglock

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the low-level statement helpers every path of the client
// uses. It refers to nothing else of the package.

// querier is what *sql.DB, *sql.Conn and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqlState returns the SQLSTATE of a server error from either lib/pq or pgx
// (both expose SQLState()), or "" for any other error.
func sqlState(err error) string {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState()
	}
	return ""
}

// isSerializationFailure reports whether err is SQLSTATE 40001, whichever
// driver reported it.
func isSerializationFailure(err error) bool {
	return sqlState(err) == "40001"
}

// retry runs f until it succeeds, fails with anything but a serialization
// failure, or ctx ends; then it returns f's last error, joined with ctx's.
// It waits a jittered, doubling backoff between tries.
func retry(ctx context.Context, log *slog.Logger, f func() error) error {
	backoff := time.Millisecond
	for {
		err := f()
		if err == nil || !isSerializationFailure(err) {
			return err
		}
		log.Debug("serialization failure, retrying", "error", err)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// execAffected runs query on q and returns how many rows it affected.
func execAffected(ctx context.Context, q querier, query string, args ...any) (int64, error) {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// eachRow runs query on q and calls scan for each row it returns, then
// closes the rows. A caller that retries it resets what scan collects at
// the start of each try.
func eachRow(ctx context.Context, q querier, scan func(*sql.Rows) error, query string, args ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// jitter spreads d over [d/2, d) so that pollers do not march in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// abandonGrace is how long a call whose context ended still waits for its
// statement to return on its own, as pgx's do, before it leaves it behind.
const abandonGrace = 20 * time.Millisecond

// runner runs statements so that no call outlives its context, whatever the
// driver does: lib/pq, for one, keeps reading a dead socket after its
// context ended, until TCP gives up. A statement that does not return
// within abandonGrace of its context's end is left running on its own
// goroutine; the caller gets the context's error at once. The runner owns
// those goroutines: wait joins them.
type runner struct {
	wg        sync.WaitGroup
	stuck     atomic.Int64 // statements left behind that have not returned yet
	abandoned atomic.Int64 // statements ever left behind
}

// Call states, for the handshake between a caller and its statement.
const (
	callRunning int32 = iota
	callReturned
	callAbandoned
)

// run calls f(ctx) and returns its error, or an abandonedError wrapping
// ctx's error once ctx ended and f did not return within abandonGrace. f then goes on alone; when it
// returns, late (if not nil) receives its error, so the caller can clean up
// what a statement it gave up on did after all.
func (r *runner) run(ctx context.Context, f func(context.Context) error, late func(error)) error {
	if ctx.Done() == nil {
		return f(ctx) // a context that never ends cannot be outlived
	}
	var state atomic.Int32
	done := make(chan error, 1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := f(ctx)
		if state.CompareAndSwap(callRunning, callReturned) {
			done <- err
			return
		}
		r.stuck.Add(-1)
		if late != nil {
			late(err)
		}
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(abandonGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if !state.CompareAndSwap(callRunning, callAbandoned) {
		return <-done // it returned just now
	}
	r.stuck.Add(1)
	r.abandoned.Add(1)
	return &abandonedError{ctx.Err()}
}

// abandonedError is the error of a call whose context ended while its
// statement was still running, left behind: the statement's outcome is
// unknown. It wraps the context's error.
type abandonedError struct{ error }

func (e *abandonedError) Unwrap() error { return e.error }

// spawn runs f on a goroutine of the runner's, which wait joins.
func (r *runner) spawn(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// wait waits until every statement left behind returned, or ctx ends.
func (r *runner) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
