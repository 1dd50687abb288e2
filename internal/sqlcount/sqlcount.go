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
	n        atomic.Int64
	inFlight atomic.Int64 // statements sent and not yet completed

	mu         sync.Mutex
	observe    func(Event)
	failAfter  func(query string, args []driver.NamedValue) error
	failBefore func(query string, args []driver.NamedValue) error
	fates      func(query string, args []driver.NamedValue, inTx bool) Fate
	delayed    []delayed
	recycle    bool          // see SetRecycle
	spare      []driver.Conn // server sessions of connections a fault "broke"
}

// SetRecycle makes connections that only an injected fault broke keep their
// server session: when the pool closes such a connection, its session is
// kept (rolled back if a transaction was open) and handed to the next
// connection opened, instead of a new one being dialed. The client still
// sees a broken connection discarded and a new one opened; only the cost
// of starting a server process is saved.
func (c *Counter) SetRecycle(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recycle = on
}

// reuse returns a kept session, if any.
func (c *Counter) reuse() driver.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.spare); n > 0 {
		s := c.spare[n-1]
		c.spare = c.spare[:n-1]
		return s
	}
	return nil
}

// park keeps a session for reuse, reporting whether it did.
func (c *Counter) park(s driver.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recycle {
		return false
	}
	c.spare = append(c.spare, s)
	return true
}

// Close closes the sessions kept for reuse.
func (c *Counter) Close() {
	c.mu.Lock()
	spare := c.spare
	c.spare, c.recycle = nil, false
	c.mu.Unlock()
	for _, s := range spare {
		_ = s.Close()
	}
}

// FateKind is what becomes of a statement under SetFates.
type FateKind int

// The fates of a statement.
const (
	// Run runs it as sent.
	Run FateKind = iota
	// FailBefore fails it before it is sent: it never reaches the server.
	FailBefore
	// LoseReply runs it to completion (an autocommit statement commits),
	// then fails it: the caller cannot know it ran.
	LoseReply
	// Delay fails it at once without sending it, and keeps it: the test
	// runs it later with RunDelayed, as a server would run a statement
	// that reached it after the client gave up. Statements inside a
	// transaction are never delayed; they fail before instead.
	Delay
	// FailAtCommit runs it in a transaction that is rolled back, hands the
	// caller its rows, and then fails it, as a deferred constraint or a
	// serialization failure at commit does: the rows the caller read never
	// happened. Inside a transaction it fails before instead.
	FailAtCommit
)

// Fate is what becomes of one statement.
type Fate struct {
	Kind FateKind
	// Err is the error the caller sees, for every kind but Run.
	Err error
	// After, when set, is called once the statement ran (Run and
	// LoseReply), before the caller sees its outcome, with the rows it
	// returned (none for an Exec).
	After func(rows [][]driver.Value)
}

// SetFates makes f decide the fate of each statement from now on; inTx is
// true inside a transaction. nil stops it.
func (c *Counter) SetFates(f func(query string, args []driver.NamedValue, inTx bool) Fate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fates = f
}

// Delayed returns how many statements wait to be run by RunDelayed.
func (c *Counter) Delayed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.delayed)
}

// delayed is a statement kept by Delay.
type delayed struct {
	query string
	run   func() ([][]driver.Value, error)
}

// RunDelayed runs the i-th statement kept by Delay now, on a connection of
// its own, and forgets it. It returns the statement's text and rows.
func (c *Counter) RunDelayed(i int) (query string, rows [][]driver.Value, err error) {
	c.mu.Lock()
	d := c.delayed[i]
	c.delayed = append(c.delayed[:i], c.delayed[i+1:]...)
	c.mu.Unlock()
	rows, err = d.run()
	return d.query, rows, err
}

// fateOf returns the fate of one statement.
func (c *Counter) fateOf(query string, args []driver.NamedValue, inTx bool) Fate {
	c.mu.Lock()
	f := c.fates
	c.mu.Unlock()
	if f == nil {
		return Fate{}
	}
	fate := f(query, args, inTx)
	if (fate.Kind == Delay || fate.Kind == FailAtCommit) && inTx {
		fate.Kind = FailBefore
	}
	return fate
}

// keep stores a delayed statement.
func (c *Counter) keep(query string, run func() ([][]driver.Value, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delayed = append(c.delayed, delayed{query, run})
}

// InFlight is how many statements were sent and have not completed: for a
// statement whose rows are read up front (a fate with After, or a failure
// hook), until they are read and After ran.
func (c *Counter) InFlight() int64 { return c.inFlight.Load() }

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
	open := func() (driver.Conn, error) { return pq.Driver{}.Open(dsn) }
	if s := d.c.reuse(); s != nil {
		return &conn{c: d.c, pq: s, open: open}, nil
	}
	cn, err := open()
	if err != nil {
		return nil, err
	}
	return &conn{c: d.c, pq: cn, open: open}, nil
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
	open := func() (driver.Conn, error) { return k.pq.Connect(context.Background()) }
	return &conn{c: k.c, pq: cn, open: open}, nil
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
	c    *Counter
	pq   driver.Conn
	open func() (driver.Conn, error) // a new connection like this one
	bad  atomic.Bool                 // a failure was injected: the pool must drop it
	inTx atomic.Bool
	real atomic.Bool // the driver itself failed: the session cannot be reused
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

// Close closes the connection, or keeps its session for reuse when only an
// injected fault broke it (see SetRecycle).
func (cn *conn) Close() error {
	if cn.bad.Load() && !cn.real.Load() && cn.inner().IsValid() {
		if cn.inTx.Load() {
			if _, err := cn.inner().ExecContext(context.Background(), "ROLLBACK", nil); err != nil {
				return cn.pq.Close()
			}
		}
		if cn.c.park(cn.pq) {
			return nil
		}
	}
	return cn.pq.Close()
}

func (cn *conn) Begin() (driver.Tx, error) {
	return cn.BeginTx(context.Background(), driver.TxOptions{})
}

func (cn *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	t, err := cn.inner().BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	cn.inTx.Store(true)
	return &tx{cn: cn, tx: t}, nil
}

// tx tracks whether its connection is inside a transaction.
type tx struct {
	cn *conn
	tx driver.Tx
}

func (t *tx) Commit() error {
	defer t.cn.inTx.Store(false)
	return t.tx.Commit()
}

func (t *tx) Rollback() error {
	defer t.cn.inTx.Store(false)
	return t.tx.Rollback()
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
	cn.c.inFlight.Add(1)
	res, err := cn.execFated(query, args, failBefore, failAfter, run)
	cn.c.inFlight.Add(-1)
	if observe != nil {
		ev.End, ev.Err = time.Now(), err
		observe(ev)
	}
	return res, err
}

// execFated runs one Exec as its fate and the failure hooks decide.
func (cn *conn) execFated(query string, args []driver.NamedValue, failBefore, failAfter func(string, []driver.NamedValue) error,
	run func() (driver.Result, error)) (driver.Result, error) {
	fate := cn.c.fateOf(query, args, cn.inTx.Load())
	if err := cn.before(query, args, fate, failBefore); err != nil {
		return nil, err
	}
	if fate.Kind == FailAtCommit {
		err := cn.rolledBack(func() error { _, err := run(); return err })
		if err != nil {
			return nil, err
		}
		return nil, fate.Err
	}
	res, err := run()
	if err != nil {
		cn.real.Store(true)
		return nil, err
	}
	if err := cn.after(query, args, fate, failAfter, nil); err != nil {
		return nil, err
	}
	return res, nil
}

// before applies the fates that fail a statement before it is sent.
func (cn *conn) before(query string, args []driver.NamedValue, fate Fate, failBefore func(string, []driver.NamedValue) error) error {
	switch fate.Kind {
	case FailBefore:
		cn.bad.Store(true)
		return fate.Err
	case Delay:
		cn.bad.Store(true)
		cn.c.keep(query, cn.later(query, args))
		return fate.Err
	}
	if failBefore != nil {
		if err := failBefore(query, args); err != nil {
			cn.bad.Store(true)
			return err
		}
	}
	return nil
}

// after applies the fates of a statement that ran to completion and
// returned rows.
func (cn *conn) after(query string, args []driver.NamedValue, fate Fate, failAfter func(string, []driver.NamedValue) error, rows [][]driver.Value) error {
	if fate.After != nil {
		fate.After(rows)
	}
	if fate.Kind == LoseReply {
		cn.bad.Store(true)
		return fate.Err
	}
	if failAfter != nil {
		if err := failAfter(query, args); err != nil {
			cn.bad.Store(true)
			return err
		}
	}
	return nil
}

// rolledBack runs f inside a transaction it then rolls back.
func (cn *conn) rolledBack(f func() error) error {
	ctx := context.Background()
	if _, err := cn.inner().ExecContext(ctx, "BEGIN", nil); err != nil {
		cn.real.Store(true)
		return err
	}
	err := f()
	if _, rerr := cn.inner().ExecContext(ctx, "ROLLBACK", nil); rerr != nil {
		cn.real.Store(true)
		return errors.Join(err, rerr)
	}
	return err
}

// later returns a function that runs query on a connection of its own
// (a kept session when SetRecycle allows) and reads its rows to the end.
func (cn *conn) later(query string, args []driver.NamedValue) func() ([][]driver.Value, error) {
	args = append([]driver.NamedValue(nil), args...)
	return func() ([][]driver.Value, error) {
		c := cn.c.reuse()
		if c == nil {
			var err error
			if c, err = cn.open(); err != nil {
				return nil, err
			}
		}
		var b *buffered
		rs, err := c.(driver.QueryerContext).QueryContext(context.Background(), query, args)
		if err == nil {
			b, err = drain(rs)
		}
		if err != nil || !c.(driver.Validator).IsValid() || !cn.c.park(c) {
			_ = c.Close()
		}
		if err != nil {
			return nil, err
		}
		return b.rows, nil
	}
}

// query counts and runs one Query.
func (cn *conn) query(query string, args []driver.NamedValue, run func() (driver.Rows, error)) (driver.Rows, error) {
	observe, failAfter, failBefore := cn.c.hooks()
	ev := &Event{Query: query, Args: append([]driver.NamedValue(nil), args...), Start: time.Now()}
	cn.c.n.Add(1)
	cn.c.inFlight.Add(1)
	rs, err := cn.queryFated(query, args, failBefore, failAfter, run)
	cn.c.inFlight.Add(-1)
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

// queryFated runs one Query as its fate and the failure hooks decide. When
// anything may fail it after the statement ran, it reads every row first,
// so that the statement completes (and an autocommit statement commits).
func (cn *conn) queryFated(query string, args []driver.NamedValue, failBefore, failAfter func(string, []driver.NamedValue) error,
	run func() (driver.Rows, error)) (driver.Rows, error) {
	fate := cn.c.fateOf(query, args, cn.inTx.Load())
	if err := cn.before(query, args, fate, failBefore); err != nil {
		return nil, err
	}
	if fate.Kind == FailAtCommit {
		var b *buffered
		err := cn.rolledBack(func() error {
			rs, err := run()
			if err == nil {
				b, err = drain(rs)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		b.err = fate.Err
		return b, nil
	}
	rs, err := run()
	if err != nil {
		cn.real.Store(true)
		return nil, err
	}
	if failAfter == nil && fate.After == nil && fate.Kind == Run {
		return rs, nil
	}
	b, err := drain(rs)
	if err != nil {
		cn.real.Store(true)
		return nil, err
	}
	if err := cn.after(query, args, fate, failAfter, b.rows); err != nil {
		return nil, err
	}
	return b, nil
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

// buffered replays rows read by drain, then err (io.EOF when nil).
type buffered struct {
	cols []string
	rows [][]driver.Value
	err  error
}

func (b *buffered) Columns() []string { return b.cols }

// Close returns the error the statement ended with, as lib/pq's rows do
// when closed before their end: database/sql's Row.Scan relies on it.
func (b *buffered) Close() error { return b.err }

func (b *buffered) Next(dest []driver.Value) error {
	if len(b.rows) == 0 {
		if b.err != nil {
			return b.err
		}
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
