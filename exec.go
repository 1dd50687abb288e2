package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"log/slog"
	"math/rand/v2"
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

// onOneConn runs f on one connection of q when q is a pool, so that
// database/sql does not send the statement again on another connection when
// the driver answers driver.ErrBadConn: a statement that committed before
// its reply was lost would then run twice, and the caller would see only
// the second answer. The caller gets driver.ErrBadConn instead, and knows
// the first send's outcome is unknown.
func onOneConn(ctx context.Context, q querier, f func(querier) error) error {
	db, ok := q.(*sql.DB)
	if !ok {
		return f(q)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	err = f(conn)
	if errors.Is(err, driver.ErrBadConn) {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // drop it from the pool
	}
	_ = conn.Close()
	return err
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
