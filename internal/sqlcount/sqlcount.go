// Package sqlcount is a test-only database/sql driver that wraps lib/pq and
// counts the statements sent to the server: every Exec and Query, prepared or
// not, inside a transaction or not. BEGIN, COMMIT and ROLLBACK are not
// counted, nor are LISTEN connections that lib/pq's ListenerConn dials on its
// own.
//
// It can also report each statement with its arguments, timing and result
// rows (SetObserver), and make a statement fail after it ran and committed
// (SetFailAfter), to stand for a connection cut right after the commit.
//
// Open registers the driver under a fresh name and uses sql.Open, so the
// *sql.DB keeps its connection string, as one opened with lib/pq would.
// OpenConnector uses sql.OpenDB instead, so that no connection string can be
// recovered from the *sql.DB.
package sqlcount

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// Event is one statement the driver sent, reported to an observer once its
// results were read to the end or closed.
type Event struct {
	Query string
	Args  []driver.NamedValue
	Start time.Time        // just before the statement was sent
	End   time.Time        // when its results were complete
	Rows  [][]driver.Value // rows read by the caller, for a Query
	Err   error            // the error the caller saw, if any
}

// Counter counts the statements sent through one *sql.DB made by Open or
// OpenConnector. Its methods are safe for concurrent use.
type Counter struct {
	n atomic.Int64

	mu         sync.Mutex
	observe    func(Event)
	failAfter  func(query string, args []driver.NamedValue) error
	failBefore func(query string, args []driver.NamedValue) error
}

// Statements returns how many statements were sent since the last Reset.
func (c *Counter) Statements() int64 { return c.n.Load() }

// Reset sets the statement count to zero.
func (c *Counter) Reset() { c.n.Store(0) }

// SetObserver makes f receive every statement sent from now on; nil stops
// it. f runs on the goroutine that sent the statement and must be quick.
func (c *Counter) SetObserver(f func(Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observe = f
}

// SetFailAfter makes f decide, for each statement from now on, whether the
// caller sees an error instead of its results. f runs after the statement
// ran to completion (for a Query, every row was read, so an autocommit
// statement has committed); when it returns an error, that error is returned
// to the caller and the connection is discarded. f may cancel the caller's
// context, to stand for a context that ended just after the commit. nil
// stops it.
func (c *Counter) SetFailAfter(f func(query string, args []driver.NamedValue) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failAfter = f
}

// SetFailBefore makes f decide, for each statement from now on, whether it
// fails before it is sent: when f returns an error, the statement does not
// reach the server, that error is returned to the caller and the connection
// is discarded. It stands for a connection that broke before the statement
// went out. nil stops it.
func (c *Counter) SetFailBefore(f func(query string, args []driver.NamedValue) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failBefore = f
}

func (c *Counter) hooks() (func(Event), func(string, []driver.NamedValue) error, func(string, []driver.NamedValue) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observe, c.failAfter, c.failBefore
}

var registered atomic.Int64

// Open returns a pool on dsn that goes through a counting lib/pq driver.
func Open(dsn string) (*sql.DB, *Counter, error) {
	c := new(Counter)
	name := fmt.Sprintf("sqlcount-%d", registered.Add(1))
	sql.Register(name, &countingDriver{c: c})
	db, err := sql.Open(name, dsn)
	if err != nil {
		return nil, nil, err
	}
	return db, c, nil
}

// OpenConnector is Open through sql.OpenDB and a driver.Connector: the
// *sql.DB keeps no connection string.
func OpenConnector(dsn string) (*sql.DB, *Counter, error) {
	pc, err := pq.NewConnector(dsn)
	if err != nil {
		return nil, nil, err
	}
	c := new(Counter)
	return sql.OpenDB(&connector{c: c, pq: pc}), c, nil
}

// countingDriver deliberately does not implement driver.DriverContext:
// sql.Open then keeps the DSN, as it does for lib/pq's own driver.
type countingDriver struct{ c *Counter }

func (d *countingDriver) Open(dsn string) (driver.Conn, error) {
	cn, err := pq.Driver{}.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &conn{c: d.c, pq: cn}, nil
}

type connector struct {
	c  *Counter
	pq driver.Connector
}

func (k *connector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := k.pq.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &conn{c: k.c, pq: cn}, nil
}

func (k *connector) Driver() driver.Driver { return &countingDriver{c: k.c} }

// pqConn is what lib/pq's connection implements.
type pqConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.NamedValueChecker
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// conn wraps one lib/pq connection.
type conn struct {
	c   *Counter
	pq  driver.Conn
	bad atomic.Bool // a failure was injected: the pool must drop it
}

var (
	_ pqConn        = (*conn)(nil)
	_ driver.Stmt   = (*stmt)(nil)
	_ driver.Rows   = (*rows)(nil)
	_ driver.Driver = (*countingDriver)(nil)
)

func (cn *conn) inner() pqConn { return cn.pq.(pqConn) }

func (cn *conn) Prepare(query string) (driver.Stmt, error) {
	return cn.PrepareContext(context.Background(), query)
}

func (cn *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := cn.inner().PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{cn: cn, query: query, pq: st}, nil
}

func (cn *conn) Close() error { return cn.pq.Close() }

func (cn *conn) Begin() (driver.Tx, error) {
	return cn.BeginTx(context.Background(), driver.TxOptions{})
}

func (cn *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return cn.inner().BeginTx(ctx, opts)
}

func (cn *conn) CheckNamedValue(nv *driver.NamedValue) error {
	return cn.inner().CheckNamedValue(nv)
}

func (cn *conn) Ping(ctx context.Context) error { return cn.inner().Ping(ctx) }

func (cn *conn) ResetSession(ctx context.Context) error {
	if cn.bad.Load() {
		return driver.ErrBadConn
	}
	return cn.inner().ResetSession(ctx)
}

func (cn *conn) IsValid() bool { return !cn.bad.Load() && cn.inner().IsValid() }

func (cn *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return cn.exec(query, args, func() (driver.Result, error) {
		return cn.inner().ExecContext(ctx, query, args)
	})
}

func (cn *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return cn.query(query, args, func() (driver.Rows, error) {
		return cn.inner().QueryContext(ctx, query, args)
	})
}

// exec counts and runs one Exec.
func (cn *conn) exec(query string, args []driver.NamedValue, run func() (driver.Result, error)) (driver.Result, error) {
	observe, failAfter, failBefore := cn.c.hooks()
	ev := Event{Query: query, Args: append([]driver.NamedValue(nil), args...), Start: time.Now()}
	cn.c.n.Add(1)
	if failBefore != nil {
		if err := failBefore(query, args); err != nil {
			cn.bad.Store(true)
			return nil, err
		}
	}
	res, err := run()
	if err == nil && failAfter != nil {
		if inject := failAfter(query, args); inject != nil {
			cn.bad.Store(true)
			res, err = nil, inject
		}
	}
	if observe != nil {
		ev.End, ev.Err = time.Now(), err
		observe(ev)
	}
	return res, err
}

// query counts and runs one Query.
func (cn *conn) query(query string, args []driver.NamedValue, run func() (driver.Rows, error)) (driver.Rows, error) {
	observe, failAfter, failBefore := cn.c.hooks()
	ev := &Event{Query: query, Args: append([]driver.NamedValue(nil), args...), Start: time.Now()}
	cn.c.n.Add(1)
	if failBefore != nil {
		if err := failBefore(query, args); err != nil {
			cn.bad.Store(true)
			return nil, err
		}
	}
	rs, err := run()
	if err == nil && failAfter != nil {
		// Read every row so the statement completes (and an autocommit
		// statement commits) before failAfter decides.
		var b *buffered
		if b, err = drain(rs); err == nil {
			rs = b
			if inject := failAfter(query, args); inject != nil {
				cn.bad.Store(true)
				err = inject
			}
		}
	}
	if err != nil {
		if observe != nil {
			ev.End, ev.Err = time.Now(), err
			observe(*ev)
		}
		return nil, err
	}
	if observe == nil {
		return rs, nil
	}
	return &rows{pq: rs, ev: ev, observe: observe}, nil
}

// drain reads rs to the end and closes it.
func drain(rs driver.Rows) (*buffered, error) {
	b := &buffered{cols: rs.Columns()}
	for {
		dest := make([]driver.Value, len(b.cols))
		err := rs.Next(dest)
		if errors.Is(err, io.EOF) {
			return b, rs.Close()
		}
		if err != nil {
			_ = rs.Close()
			return nil, err
		}
		for i, v := range dest {
			if p, ok := v.([]byte); ok {
				dest[i] = append([]byte(nil), p...)
			}
		}
		b.rows = append(b.rows, dest)
	}
}

// buffered replays rows read by drain.
type buffered struct {
	cols []string
	rows [][]driver.Value
}

func (b *buffered) Columns() []string { return b.cols }
func (b *buffered) Close() error      { return nil }

func (b *buffered) Next(dest []driver.Value) error {
	if len(b.rows) == 0 {
		return io.EOF
	}
	copy(dest, b.rows[0])
	b.rows = b.rows[1:]
	return nil
}

// stmt wraps a prepared statement.
type stmt struct {
	cn    *conn
	query string
	pq    driver.Stmt
}

func (st *stmt) Close() error  { return st.pq.Close() }
func (st *stmt) NumInput() int { return st.pq.NumInput() }

func (st *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return st.ExecContext(context.Background(), named(args))
}

func (st *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return st.QueryContext(context.Background(), named(args))
}

func (st *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	return st.cn.exec(st.query, args, func() (driver.Result, error) {
		return st.pq.(driver.StmtExecContext).ExecContext(ctx, args)
	})
}

func (st *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	return st.cn.query(st.query, args, func() (driver.Rows, error) {
		return st.pq.(driver.StmtQueryContext).QueryContext(ctx, args)
	})
}

func named(args []driver.Value) []driver.NamedValue {
	nv := make([]driver.NamedValue, len(args))
	for i, v := range args {
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return nv
}

// rows records what the caller reads, and reports the statement on Close.
type rows struct {
	pq      driver.Rows
	ev      *Event
	observe func(Event)
	once    sync.Once
}

func (r *rows) Columns() []string { return r.pq.Columns() }

func (r *rows) Next(dest []driver.Value) error {
	err := r.pq.Next(dest)
	switch {
	case err == nil:
		row := make([]driver.Value, len(dest))
		for i, v := range dest {
			if b, ok := v.([]byte); ok {
				v = append([]byte(nil), b...)
			}
			row[i] = v
		}
		r.ev.Rows = append(r.ev.Rows, row)
	case !errors.Is(err, io.EOF):
		r.ev.Err = err
	}
	return err
}

func (r *rows) Close() error {
	err := r.pq.Close()
	r.once.Do(func() {
		r.ev.End = time.Now()
		r.observe(*r.ev)
	})
	return err
}
