package pglock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"

	"cirello.io/pglock/internal/bounded"
	"cirello.io/pglock/internal/redact"
)

// Client is the entry point: it acquires and releases named locks kept in a
// PostgreSQL table. It is safe for concurrent use. It never closes the *sql.DB
// it was given. Close stops everything it runs in the background.
type Client struct {
	db                 *sql.DB
	tableName          string
	table              identifier
	sql                statements
	leaseDuration      time.Duration
	heartbeatFrequency time.Duration
	owner              string
	sessionDSN         string
	secrets            *redact.Secrets // kept out of errors and logs (see secrets.go)
	log                *slog.Logger
	stats              counters
	clock              clock
	tableChecked       atomic.Bool  // checkTable passed
	trip               atomic.Int64 // duration of the latest answered acquire or heartbeat, in ns

	calls      bounded.Runner // statements left behind by callers whose context ended
	keep       *keeper
	heartbeats *heartbeater
	waits      *waitRoom
	live       heldLocks
	fq         fairQueue

	closing   context.Context // ends when Close is called
	close     context.CancelFunc
	closeOnce sync.Once
	observers sync.WaitGroup // Election.Observe goroutines
}

// New returns a lock client on db, which must use a PostgreSQL driver this
// package trusts: lib/pq or pgx v5's database/sql driver. It returns
// ErrNilDB (which wraps ErrNotPostgreSQLDriver) for a nil db,
// ErrNotPostgreSQLDriver for another driver, ErrDurationTooSmall for a bad
// lease or heartbeat frequency, and ErrInvalidTableName or ErrInvalidName
// for a table or owner that cannot be used. It sends no SQL. On failure db
// is left open and untouched.
func New(db *sql.DB, opts ...ClientOption) (*Client, error) {
	if db == nil {
		return nil, ErrNilDB
	}
	if !isTrustedDriver(db) {
		return nil, ErrNotPostgreSQLDriver
	}
	return UnsafeNew(db, opts...)
}

// UnsafeNew is New without the driver check, for PostgreSQL drivers this
// package does not know. It still refuses a nil db and bad options.
func UnsafeNew(db *sql.DB, opts ...ClientOption) (*Client, error) {
	if db == nil {
		return nil, ErrNilDB
	}
	c := &Client{
		db:                 db,
		tableName:          DefaultTableName,
		leaseDuration:      DefaultLeaseDuration,
		heartbeatFrequency: DefaultHeartbeatFrequency,
		log:                discardLogger,
		clock:              realClock{},
	}
	for _, opt := range opts {
		if opt != nil {
			opt(c)
		}
	}
	c.secrets = c.clientSecrets()
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.log = redactLogger(c.log, c.secrets)
	c.sql = newStatements(c.table)
	c.fq.init(c.table)
	c.calls.Bound = c.statementBound()
	c.keep = newKeeper(db, c.sessionConnString(), &c.calls, c.leaseDuration, c.log)
	c.keep.secrets = c.secrets
	c.heartbeats = newHeartbeater(c)
	c.waits = newWaitRoom(c)
	c.closing, c.close = context.WithCancel(context.Background())
	return c, nil
}

// validate checks the options and fills in the defaults they leave.
func (c *Client) validate() error {
	if c.log == nil {
		c.log = discardLogger
	}
	c.heartbeatFrequency = max(c.heartbeatFrequency, 0) // negative means off, as in the original
	if err := checkDurations(c.leaseDuration, c.heartbeatFrequency); err != nil {
		return err
	}
	if c.owner == "" {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			return fmt.Errorf("pglock: cannot make an owner name: %w", err)
		}
		c.owner = fmt.Sprintf("pglock-%d", n)
	}
	if err := validName(c.owner); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	if err := c.checkSessionDSN(); err != nil {
		return err
	}
	table, err := parseTableName(c.tableName)
	c.table = table
	return err
}

// sessionConnString is the connection string of the client's own
// sessions: WithSessionDSN's, else the one db was opened with, else "".
func (c *Client) sessionConnString() string {
	if c.sessionDSN != "" {
		return c.sessionDSN
	}
	dsn, _ := connString(c.db)
	return dsn
}

// checkSessionDSN refuses a WithSessionDSN connection string lib/pq cannot
// parse; the driver's error is kept, scrubbed of the string. pgx parses
// its connection strings only when it connects.
func (c *Client) checkSessionDSN() error {
	if c.sessionDSN == "" {
		return nil
	}
	switch c.db.Driver().(type) {
	case *pq.Driver, pq.Driver:
		if _, err := pq.NewConfig(c.sessionDSN); err != nil {
			return fmt.Errorf("pglock: WithSessionDSN: cannot parse the connection string: %w", c.secrets.Error(err))
		}
	}
	return nil
}

// validName checks that s fits the name and owner columns.
func validName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(s) > 255:
		return fmt.Errorf("%w: %d bytes, more than 255", ErrInvalidName, len(s))
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidName)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%w: contains a NUL byte", ErrInvalidName)
		}
	}
	return nil
}

// statement runs f, a statement on the caller's pool, so that it returns
// within ctx, and within statementBound when ctx has no earlier deadline;
// see internal/bounded for what happens to a statement left behind.
func (c *Client) statement(ctx context.Context, f func(context.Context) error, late func(error)) error {
	ctx, cancel := context.WithTimeout(ctx, c.statementBound())
	defer cancel()
	return c.secrets.Error(c.calls.Run(ctx, f, late))
}

// statementBound bounds a statement whose caller's context allows longer:
// two leases. A statement may wait that long for a row lock only if a
// Guard transaction outlives the lease, which already costs its holder the
// lock; beyond it, the connection is taken for dead. (The original library
// bounded its statements to one lease.)
func (c *Client) statementBound() time.Duration {
	return 2 * c.leaseDuration
}

// Acquire is AcquireContext with context.Background(): it waits as long as it
// takes.
func (c *Client) Acquire(name string, opts ...LockOption) (*Lock, error) {
	return c.AcquireContext(context.Background(), name, opts...)
}

// AcquireContext blocks until it holds the named lock, or ctx ends. A lock
// is taken when its row is absent or released, or when its record version
// number stayed the same for a whole lease, as timed by this client's clock.
// A release by another client wakes the waiter at once.
//
// When ctx ends first it returns an error wrapping ErrNotAcquired and
// ctx.Err(). With FailIfLocked it returns ErrNotAcquired at once when the
// lock is held, with a non-nil *Lock that is not held and tells the
// holder's owner and record version number. On any failure nothing is left
// held. Unless WithCustomHeartbeatContext says otherwise, the lock's
// heartbeat runs while ctx lives: a ctx cancelled right after
// AcquireContext returns stops it.
//
// Every error it returns wraps ErrNotAcquired. A name that cannot be
// stored (see ErrInvalidName) is refused at once. A database error ends
// the wait too, as an UnavailableError when the database
// could not be reached or the connection broke, a FailedPreconditionError
// when serialization failures outlasted ctx, or an OtherError. After Close
// it returns an error wrapping ErrNotAcquired and ErrClosed.
func (c *Client) AcquireContext(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	if err := validName(name); err != nil {
		return nil, &OtherError{&notAcquiredError{err}}
	}
	l := &Lock{client: c, name: name, owner: c.owner, heartbeatContext: ctx, op: newOpLock()}
	for _, opt := range opts {
		if opt != nil {
			opt(l)
		}
	}
	return c.acquireNew(ctx, l)
}

// acquireNew acquires l, a lock or (l.sem set) a permit of a semaphore,
// built with its options, and starts its heartbeat.
func (c *Client) acquireNew(ctx context.Context, l *Lock) (*Lock, error) {
	if c.closing.Err() != nil {
		return nil, &OtherError{errors.Join(ErrNotAcquired, ErrClosed)}
	}
	if err := c.checkTable(ctx, false); err != nil {
		return nil, &notAcquiredError{err}
	}
	if l.heartbeatContext == nil {
		l.heartbeatContext = context.Background()
	}
	actx, stop := c.untilClosed(ctx)
	defer stop()
	c.live.add(l) // before any statement: a release of an older Lock of the name must not free what this one takes
	res, err := c.acquire(actx, l)
	if err != nil {
		c.live.remove(l)
		if l.failIfLocked && res.known && l.sem == nil && errors.Is(err, ErrNotAcquired) {
			return newEndedLock(c, l.name, res.holder, l.data, res.rvn, errNotHeld), err
		}
		return nil, err
	}
	c.stats.add(counterAcquired, 1)
	if c.closing.Err() != nil {
		// Close may have swept the held locks before this one was added:
		// free it at once.
		_ = c.release(context.WithoutCancel(ctx), l)
		return nil, &OtherError{errors.Join(ErrNotAcquired, ErrClosed)}
	}
	if c.heartbeatFrequency > 0 {
		c.heartbeats.add(l)
	}
	c.log.Debug("lock acquired", "lock", l.name, "owner", c.owner, "rvn", l.RecordVersionNumber())
	return l, nil
}

// untilClosed returns ctx, ended also (with cause ErrClosed) when the
// client is closed.
func (c *Client) untilClosed(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.closing, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// Do acquires the named lock, runs f and releases the lock. The context
// given to f is cancelled when the lock is lost, so f can stop.
//
// Do returns f's error when f fails. When f succeeds it returns nil, unless
// the release shows that someone else may have held the lock while f ran:
// then it returns an error wrapping ErrLockAlreadyReleased. That is the case
// when the row no longer carried the lock's record version number, or when
// the lock was counted lost during f (its lease lapsed without a heartbeat)
// and the release could not prove the row untouched. A lock whose lease
// lapsed but whose row the release still found unchanged was held by nobody
// else: Do returns nil, as the original library did. A release that fails
// for another reason (the database cannot be reached) after f ran under a
// lock that was never counted lost does not change Do's result either; the
// row is then left to expire, and the failure is logged.
//
// The release is deferred: when f panics or calls runtime.Goexit, the lock
// is released and f's context cancelled all the same, and the panic goes
// on unchanged.
func (c *Client) Do(ctx context.Context, name string, f func(context.Context, *Lock) error, opts ...LockOption) error {
	if f == nil {
		return &OtherError{errors.New("pglock: Do needs a function")}
	}
	l, err := c.AcquireContext(ctx, name, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(doneContext(l), cancel)
	finished := false
	defer func() {
		if !finished { // f panicked or called runtime.Goexit: release all the same
			stop()
			cancel()
			_ = c.ReleaseContext(context.WithoutCancel(ctx), l)
		}
	}()
	ferr := f(fctx, l)
	finished = true
	stop()
	cancel()
	lost := l.Err()
	rerr := c.ReleaseContext(context.WithoutCancel(ctx), l)
	switch {
	case ferr != nil:
		return ferr
	case rerr == nil:
		return nil
	case errors.Is(rerr, ErrLockAlreadyReleased):
		return rerr
	case lost != nil:
		return &OtherError{fmt.Errorf("%w (and the release failed: %w)", lost, rerr)}
	}
	// The release ended the lock but could not free its row.
	c.log.Warn("lock not released after Do; its row expires after a lease", "lock", name, "owner", c.owner, "error", rerr)
	return nil
}

// doneContext returns a context that ends when l's Done closes.
func doneContext(l *Lock) context.Context {
	return lockContext{l}
}

// lockContext is a context.Context whose Done is a lock's.
type lockContext struct{ l *Lock }

func (lockContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c lockContext) Done() <-chan struct{}     { return c.l.Done() }
func (lockContext) Value(any) any               { return nil }
func (c lockContext) Err() error {
	select {
	case <-c.l.Done():
		return context.Canceled
	default:
		return nil
	}
}

// Release is ReleaseContext with context.Background().
func (c *Client) Release(l *Lock) error {
	return c.ReleaseContext(context.Background(), l)
}

// ReleaseContext ends the lock and releases it: first the lock ends here
// (Done closes, IsReleased reports true, the heartbeat stops), then its row
// is deleted, or kept with a NULL record version number under
// KeepOnRelease, and waiting clients are woken. No goroutine watching Done
// still believes it holds the lock once another client can take it.
//
// It returns nil when it freed the row, also for a lock whose lease had
// lapsed (Done was closed, Err tells) when nobody took the row over
// meanwhile, as in the original library; such a lock is counted lost in
// Stats, not released. It returns an error wrapping ErrLockAlreadyReleased
// when the lock was already released, or its row no longer carried its
// record version number (the lock was lost).
//
// Whatever else happens, the lock stays ended and is never held again.
// When the statement fails, or its outcome is unknown (the connection
// broke after sending it), it is sent again until it answers, ctx ends or
// half a lease passed; the error then says the row was not freed.
// Calling ReleaseContext again tries again to free the row at the lock's
// record version number; otherwise the row expires a lease after its last
// heartbeat. A ctx that had already ended frees the row on a goroutine of
// the client's, within a quarter of a lease. It is safe to call from any
// goroutine, any number of times, and returns within ctx.
func (c *Client) ReleaseContext(ctx context.Context, l *Lock) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if l.client != c {
		return l.client.ReleaseContext(ctx, l)
	}
	return c.release(ctx, l)
}

// SendHeartbeat bumps the lock's record version number once, so others see
// it is alive. It returns an error wrapping ErrLockAlreadyReleased, and
// marks the lock released, when the row no longer carries this lock's
// record version number. Any other error (the database is unreachable)
// leaves the lock held: it is lost only when no heartbeat succeeds for a
// whole lease. It returns within ctx, and within a lease.
func (c *Client) SendHeartbeat(ctx context.Context, l *Lock) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if l.client != c {
		return l.client.SendHeartbeat(ctx, l)
	}
	ctx, cancel := context.WithTimeout(ctx, c.leaseDuration)
	defer cancel()
	if err := l.op.lock(ctx); err != nil {
		return contextError(ctx, fmt.Errorf("pglock: heartbeat of %q: %w", l.name, err))
	}
	defer l.op.unlock()
	return c.heartbeatOne(ctx, l)
}

// Get is GetContext with context.Background().
func (c *Client) Get(name string) (*Lock, error) {
	return c.GetContext(context.Background(), name)
}

// GetContext reads the named lock's row without acquiring it. The returned
// Lock is not held: IsReleased reports true and releasing it fails. It
// returns ErrLockNotFound (a *NotExistError) when there is no such row, an
// error wrapping ErrInvalidName for a name no row can have, and database
// errors as an UnavailableError or OtherError. A missing row is routine: it
// is not logged.
func (c *Client) GetContext(ctx context.Context, name string) (*Lock, error) {
	if err := validName(name); err != nil {
		return nil, &OtherError{err}
	}
	r, err := c.readRow(ctx, name)
	if err != nil {
		return nil, err
	}
	return newEndedLock(c, name, r.owner.String, r.data, r.rvn.Int64, errNotHeld), nil
}

// storedRow is a lock row as Get reads it.
type storedRow struct {
	owner sql.NullString
	data  []byte
	rvn   sql.NullInt64
}

// readRow reads the named row; ErrLockNotFound when there is none.
func (c *Client) readRow(ctx context.Context, name string) (storedRow, error) {
	return c.readRowOn(ctx, name, c.keep.onPool)
}

// readRowOn is readRow on lane: the caller's pool, or the client's own
// connections for an election's watch, which polls.
func (c *Client) readRowOn(ctx context.Context, name string, lane func(context.Context, func(context.Context, querier) error) error) (storedRow, error) {
	if err := c.checkTable(ctx, false); err != nil {
		return storedRow{}, err
	}
	var r storedRow
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			return lane(ctx, func(ctx context.Context, q querier) error {
				var got string
				return q.QueryRowContext(ctx, c.sql.get, name).Scan(&got, &r.owner, &r.data, &r.rvn)
			})
		})
	}, nil)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return storedRow{}, ErrLockNotFound
	case err != nil:
		return storedRow{}, typeError(fmt.Errorf("pglock: cannot read %q: %w", name, err))
	}
	return r, nil
}

// GetData is GetDataContext with context.Background().
func (c *Client) GetData(name string) ([]byte, error) {
	return c.GetDataContext(context.Background(), name)
}

// GetDataContext reads the data stored with the named lock, held or kept. It
// returns ErrLockNotFound when there is no such row.
func (c *Client) GetDataContext(ctx context.Context, name string) ([]byte, error) {
	l, err := c.GetContext(ctx, name)
	if err != nil {
		return nil, err
	}
	return l.Data(), nil
}

// GetAllLocks is GetAllLocksContext with context.Background().
func (c *Client) GetAllLocks() ([]*ReadOnlyLock, error) {
	return c.GetAllLocksContext(context.Background())
}

// GetAllLocksContext reads every row of the table, held or kept, ordered by
// name. The locks returned are not held. Database errors are returned as an
// UnavailableError or OtherError, with no locks.
func (c *Client) GetAllLocksContext(ctx context.Context) ([]*ReadOnlyLock, error) {
	if err := c.checkTable(ctx, false); err != nil {
		return nil, err
	}
	var locks []*ReadOnlyLock
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			locks = locks[:0]
			return eachRow(ctx, c.db, func(rows *sql.Rows) error {
				var (
					name string
					r    storedRow
				)
				if err := rows.Scan(&name, &r.owner, &r.data, &r.rvn); err != nil {
					return err
				}
				locks = append(locks, (*ReadOnlyLock)(newEndedLock(c, name, r.owner.String, r.data, r.rvn.Int64, errNotHeld)))
				return nil
			}, c.sql.getAll)
		})
	}, nil)
	if err != nil {
		return nil, typeError(fmt.Errorf("pglock: cannot read locks: %w", err))
	}
	return locks, nil
}

// ForceRelease deletes the named lock's row whatever its record version
// number, held or kept, data included, and wakes the clients waiting for it.
// It is an operator's override for a lock whose holder is stuck: it breaks
// mutual exclusion for the current holder, which goes on believing it holds
// the lock until its next heartbeat finds the row gone, or, when its
// heartbeats are failing, until its lease runs out, while a waiter may
// already have taken it. Use it only when the holder is known to be dead or
// harmless. It returns ErrLockNotFound when there is no such row. When the
// connection broke (an UnavailableError) the row may or may not have been
// deleted; any other error leaves it as it was.
func (c *Client) ForceRelease(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return &OtherError{err}
	}
	if err := c.checkTable(ctx, false); err != nil {
		return err
	}
	for _, l := range c.live.named(name, false) {
		// This client's own lock ends before its row can go.
		if l.end(errForced) {
			c.stats.add(counterReleased, 1)
		}
		c.heartbeats.remove(l)
	}
	var affected int64
	err := c.statement(ctx, func(ctx context.Context) error {
		return retry(ctx, c.log, func() error {
			return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
				var err error
				_, _, forceRelease := c.releaseSQL()
				affected, err = execAffected(ctx, q, forceRelease, name, c.sql.channel)
				return err
			})
		})
	}, nil)
	switch {
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot force the release of %q: %w", name, err))
	case affected == 0:
		return ErrLockNotFound
	}
	c.log.Debug("lock released by force", "lock", name, "by", c.owner)
	return nil
}

// Close stops everything the client runs in the background, and returns
// within ctx. It releases every lock the client still holds, as
// ReleaseContext does: each lock ends before its row is freed, and a row it
// cannot free (the database cannot be reached) is left to expire a lease
// after its last heartbeat. It stops waiters (their AcquireContext
// returns an error wrapping ErrNotAcquired and ErrClosed), election
// observers and the release listener, and waits for their goroutines and
// for statements that callers gave up on, until ctx ends. It returns the
// release errors, joined, and ctx's error if it ended first. It never
// closes the *sql.DB. After Close, AcquireContext fails; reads (Get,
// GetAllLocks) still work. Close is safe to call more than once.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(c.close)
	var errs []error
	for _, l := range c.live.named("", false) {
		if err := c.ReleaseContext(ctx, l); err != nil && !errors.Is(err, ErrLockAlreadyReleased) {
			errs = append(errs, err)
		}
	}
	c.heartbeats.close()
	c.waits.close()
	c.keep.close()
	errs = append(errs, c.join(ctx))
	return errors.Join(errs...)
}

// join waits for every goroutine the client started, or ctx's end.
func (c *Client) join(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.heartbeats.gens.Wait()
		c.waits.listeners.Wait()
		c.observers.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("pglock: Close gave up waiting for the client's goroutines: %w", ctx.Err())
	}
	c.leaveAll(ctx)
	if err := c.calls.Wait(ctx); err != nil {
		return fmt.Errorf("pglock: Close gave up waiting for %d statements left behind on dead connections: %w", c.calls.Stuck(), err)
	}
	return nil
}
