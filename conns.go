package pglock

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"cirello.io/pglock/internal/bounded"
	"cirello.io/pglock/internal/redact"
)

// keeper runs the statements that keep held locks alive and settle them:
// heartbeats, read-backs and releases. While the client holds locks it
// keeps a small pool of its own, opened with the connection string of the
// client's sessions (WithSessionDSN, or the one the *sql.DB was opened
// with), so that neither the caller's busy pool nor a dead connection idle
// in it can hold them up. Without a connection string it uses the caller's
// pool.
//
// Every statement runs on a connection of its own (*sql.Conn): database/sql
// then never re-sends it silently on another connection, as it does with
// *sql.DB when lib/pq reports a broken connection after sending, which
// would hide an unknown outcome. A statement given up on leaves its
// connection behind; it is discarded when the statement returns.
type keeper struct {
	db       *sql.DB // the caller's pool
	connect  driver.Connector
	calls    *bounded.Runner
	log      *slog.Logger
	secrets  *redact.Secrets // scrubbed from the errors it returns
	dialFor  time.Duration   // how long a connection of the own pool may take to open
	stopDial context.Context
	stop     context.CancelFunc

	// split is set once a pooler split a statement of the caller's pool
	// (see isSplit): every statement then runs on the client's own pool,
	// held open while it runs.
	split atomic.Bool

	mu        sync.Mutex
	holders   int         // hold calls not matched by letGo
	own       *sql.DB     // the client's own pool: open while holders > 0, and linger after
	lingering *time.Timer // closes own once it lingered unused
	dialing   bool        // a connection of own is being opened in the background
	closed    bool
}

// ownIdleConns is how many idle connections the client's own pool keeps:
// enough for the batches of one heartbeat tick that run at once.
const ownIdleConns = maxParallelBeats

// notSentError wraps the error of a statement that never left: no
// connection could be had for it.
type notSentError struct{ error }

func (e *notSentError) Unwrap() error { return e.error }

// ownConnectTimeout bounds the set-up of a lib/pq connection of the
// client's own pool whose connection string sets no connect_timeout.
const ownConnectTimeout = 5 * time.Second

// ownLinger is how long the client's own pool stays open after the last
// lock is released, so that a client that takes locks back to back does not
// dial a connection each time.
const ownLinger = 100 * time.Millisecond

// newKeeper returns the keeper of a client on db whose sessions connect
// with dsn ("" when there is none). Its own connections may take dialFor
// to open.
func newKeeper(db *sql.DB, dsn string, calls *bounded.Runner, dialFor time.Duration, log *slog.Logger) *keeper {
	k := &keeper{db: db, calls: calls, dialFor: dialFor, log: log}
	k.stopDial, k.stop = context.WithCancel(context.Background())
	if dsn != "" {
		k.connect = sessionConnector(db.Driver(), dsn)
	}
	return k
}

// sessionConnector returns a connector for the client's own connections:
// lib/pq's with binary_parameters on (each statement then goes out in one
// round trip, which a pooler in transaction mode needs), or the driver's.
// A lib/pq connection string without connect_timeout gets ownConnectTimeout:
// lib/pq honours no context while it sets a connection up, and a server
// that accepts the connection and then goes silent would hold the dial
// until TCP gives up.
func sessionConnector(d driver.Driver, dsn string) driver.Connector {
	switch d.(type) {
	case *pq.Driver, pq.Driver:
		if cfg, err := pq.NewConfig(dsn); err == nil {
			cfg.BinaryParameters = true
			if cfg.ConnectTimeout <= 0 {
				cfg.ConnectTimeout = ownConnectTimeout
			}
			if c, err := pq.NewConnectorConfig(cfg); err == nil {
				return c
			}
		}
	}
	if dc, ok := d.(driver.DriverContext); ok {
		if c, err := dc.OpenConnector(dsn); err == nil {
			return c
		}
	}
	return dsnConnector{d, dsn}
}

// dsnConnector opens connections with a driver that has no connectors.
type dsnConnector struct {
	driver driver.Driver
	dsn    string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.driver.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.driver }

// hold notes that the client holds locks: the keeper keeps its connections.
func (k *keeper) hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.holdLocked()
}

func (k *keeper) holdLocked() {
	k.holders++
	if k.lingering != nil {
		k.lingering.Stop()
		k.lingering = nil
	}
	if k.own == nil && k.connect != nil && !k.closed {
		k.own = sql.OpenDB(k.connect)
		k.own.SetMaxIdleConns(ownIdleConns)
		k.dialLocked(k.own)
	}
}

// dialLocked opens a connection of own in the background, unless one is
// being opened already, and leaves it idle in own. Opening a connection
// takes several round trips; the statements that keep locks alive must
// not spend their time on it, least of all when the network is slow. k.mu
// is held.
func (k *keeper) dialLocked(own *sql.DB) {
	if k.dialing {
		return
	}
	k.dialing = true
	k.calls.Spawn(func() {
		ctx, cancel := context.WithTimeout(k.stopDial, k.dialFor)
		defer cancel()
		if conn, err := own.Conn(ctx); err == nil {
			_ = conn.Close() // back to own's idle connections
		}
		k.mu.Lock()
		k.dialing = false
		k.mu.Unlock()
	})
}

// letGo undoes one hold; after the last, the keeper closes its own pool
// once it lingered unused.
func (k *keeper) letGo() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.holders--
	if k.holders > 0 {
		return
	}
	k.holders = 0
	if k.own != nil && k.lingering == nil {
		own := k.own
		k.lingering = time.AfterFunc(ownLinger, func() { k.closeOwn(own) })
	}
}

// closeOwn closes own, the client's own pool, unless it is in use again.
func (k *keeper) closeOwn(own *sql.DB) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.own != own || k.holders > 0 {
		return
	}
	if k.lingering != nil {
		k.lingering.Stop()
		k.lingering = nil
	}
	k.own = nil
	_ = own.Close() // connections in use close when they are put back
}

// run gets a connection and runs f on it, returning within ctx whatever the
// driver does (see internal/bounded). An error wrapping notSentError means f never
// ran. It is for the statements that keep locks alive: heartbeats and
// read-backs. They run on a connection of the client's own pool when one
// is idle; else on the caller's pool while one of the own pool opens in the
// background for the next.
func (k *keeper) run(ctx context.Context, f func(context.Context, querier) error) error {
	return k.runOn(ctx, true, f)
}

// runWarm is run for statements a caller waits for, such as a release: on
// a connection of the client's own pool when one is idle, else on the
// caller's pool, without opening one for later.
func (k *keeper) runWarm(ctx context.Context, f func(context.Context, querier) error) error {
	return k.runOn(ctx, false, f)
}

// runOn runs f as run and runWarm describe. Getting the connection is part
// of the call the runner bounds: a driver may hang while connecting too.
func (k *keeper) runOn(ctx context.Context, dial bool, f func(context.Context, querier) error) error {
	err := k.calls.Run(ctx, func(ctx context.Context) error {
		own, err := k.onConn(ctx, dial, f)
		if !own && k.splitSeen(err) {
			_, err = k.onConn(ctx, true, f)
		}
		return err
	}, nil)
	var abandoned *bounded.AbandonedError
	if errors.As(err, &abandoned) || isConnFault(err) {
		k.flushIdle() // connections opened alongside a dead one may be dead too
	}
	return k.secrets.Error(err)
}

// onOwn runs f as run does, but on the calling goroutine, for a caller
// that bounds it already: the statements of waiters and observers, which
// poll. On the client's own pool, whose lib/pq connections send a
// statement with its parameters in one round trip, a poll costs the server
// one transaction instead of two.
func (k *keeper) onOwn(ctx context.Context, f func(context.Context, querier) error) error {
	own, err := k.onConn(ctx, true, f)
	if !own && k.splitSeen(err) {
		_, err = k.onConn(ctx, true, f)
	}
	if isConnFault(err) {
		k.flushIdle()
	}
	return err
}

// onConn runs f on a connection of its own (see conn), and reports whether
// that connection was of the client's own pool.
func (k *keeper) onConn(ctx context.Context, dial bool, f func(context.Context, querier) error) (own bool, err error) {
	if k.split.Load() {
		k.hold()
		defer k.letGo()
	}
	conn, own, err := k.conn(ctx, dial)
	if err != nil {
		return own, &notSentError{err}
	}
	err = f(ctx, conn)
	if isConnFault(err) {
		// driver.ErrBadConn makes database/sql drop the connection
		// instead of handing it out again.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = conn.Close()
	return own, err
}

// conn returns a connection for one statement, and whether it is of the
// client's own pool: an idle one of that pool (any of it once a pooler
// split a statement), else one of the caller's pool; with dial, it opens
// one of the own pool in the background for the next statement.
func (k *keeper) conn(ctx context.Context, dial bool) (*sql.Conn, bool, error) {
	k.mu.Lock()
	own := k.own
	idle := own != nil && own.Stats().Idle > 0
	split := k.split.Load()
	if own != nil && !idle && !split && dial {
		k.dialLocked(own)
	}
	k.mu.Unlock()
	if own != nil && (idle || split) {
		c, err := own.Conn(ctx)
		return c, true, err
	}
	c, err := k.db.Conn(ctx)
	return c, false, err
}

// onPool runs f on the caller's pool, as the client's statements that do
// not keep locks alive run; once a pooler split a statement (see isSplit),
// on a connection of the client's own pool instead, the split one again
// too.
func (k *keeper) onPool(ctx context.Context, f func(context.Context, querier) error) error {
	if !k.split.Load() {
		err := f(ctx, k.db)
		if !k.splitSeen(err) {
			return k.secrets.Error(err)
		}
	}
	_, err := k.onConn(ctx, true, f)
	return k.secrets.Error(err)
}

// splitSeen reports whether err shows a statement a pooler split (see
// isSplit) that the client's own pool, whose lib/pq connections send
// binary parameters, can run instead. The first one is logged.
func (k *keeper) splitSeen(err error) bool {
	if k.connect == nil || !isSplit(err) {
		return false
	}
	if !k.split.Swap(true) {
		k.log.Warn(splitLog, "error", err)
	}
	return true
}

// flushIdle closes the idle connections of the client's own pool, so that
// the next statement dials a fresh one.
func (k *keeper) flushIdle() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.own != nil {
		k.own.SetMaxIdleConns(-1)
		k.own.SetMaxIdleConns(ownIdleConns)
	}
}

// close lets go of everything at once, for Client.Close.
func (k *keeper) close() {
	k.stop()
	k.mu.Lock()
	k.closed = true
	k.holders = 1
	own := k.own
	k.mu.Unlock()
	k.letGo()
	if own != nil {
		k.closeOwn(own)
	}
}

// isConnFault reports whether err may have left its connection unusable:
// any error but a server's answer to the statement (or no row).
func isConnFault(err error) bool {
	if err == nil || errors.Is(err, sql.ErrNoRows) || isSplit(err) {
		return false
	}
	return sqlState(err) == "" || isUnavailable(err)
}
