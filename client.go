package pglock

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"reflect"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Client is the entry point: it acquires and releases named locks kept in a
// PostgreSQL table. It is safe for concurrent use. It never closes the *sql.DB
// it was given.
type Client struct {
	db                 *sql.DB
	tableName          string
	table              identifier
	sql                statements
	leaseDuration      time.Duration
	heartbeatFrequency time.Duration
	owner              string
	log                *slog.Logger
	stats              counters
	tableChecked       atomic.Bool // checkTable passed

	heartbeats *heartbeater
	waits      *waitRoom
}

// New returns a lock client on db, which must use a PostgreSQL driver this
// package trusts: lib/pq or pgx v5's database/sql driver. It returns
// ErrNilDB for a nil db, ErrNotPostgreSQLDriver for another driver,
// ErrDurationTooSmall for a bad lease or heartbeat frequency, and
// ErrInvalidTableName or ErrInvalidName for a table or owner that cannot be
// used. On failure db is left open and untouched.
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
	}
	for _, opt := range opts {
		if opt != nil {
			opt(c)
		}
	}
	if c.log == nil {
		c.log = discardLogger
	}
	c.heartbeatFrequency = max(c.heartbeatFrequency, 0) // negative means off, as in the original
	switch {
	case c.leaseDuration <= 0:
		return nil, fmt.Errorf("%w: lease %v must be positive", ErrDurationTooSmall, c.leaseDuration)
	case c.heartbeatFrequency > 0 && c.leaseDuration < 2*c.heartbeatFrequency:
		return nil, fmt.Errorf("%w: lease %v must be at least twice the heartbeat frequency %v", ErrDurationTooSmall, c.leaseDuration, c.heartbeatFrequency)
	}
	if c.owner == "" {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
		if err != nil {
			return nil, fmt.Errorf("pglock: cannot make an owner name: %w", err)
		}
		c.owner = fmt.Sprintf("pglock-%d", n)
	}
	if err := validName(c.owner); err != nil {
		return nil, fmt.Errorf("owner: %w", err)
	}
	table, err := parseTableName(c.tableName)
	if err != nil {
		return nil, err
	}
	c.table = table
	c.sql = newStatements(table)
	c.heartbeats = newHeartbeater(c)
	c.waits = newWaitRoom(c)
	return c, nil
}

// isTrustedDriver reports whether db's driver is lib/pq or pgx v5's stdlib.
// pgx is recognised by its type, so this package does not import it.
func isTrustedDriver(db *sql.DB) bool {
	t := reflect.TypeOf(db.Driver())
	if t == nil {
		return false
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.PkgPath() + "." + t.Name() {
	case "github.com/lib/pq.Driver", "github.com/jackc/pgx/v5/stdlib.Driver":
		return true
	}
	return false
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
// ctx.Err(). With FailIfLocked it returns a non-nil, unheld *Lock and
// ErrNotAcquired at once when the lock is held. On any failure nothing is
// left held. Unless WithCustomHeartbeatContext says otherwise, the lock's
// heartbeat runs while ctx lives: a ctx cancelled right after AcquireContext
// returns stops it.
//
// A name that cannot be stored (see ErrInvalidName) is refused at once. A
// database error ends the wait too, as an UnavailableError when the database
// could not be reached or the connection broke, a FailedPreconditionError
// when serialization failures outlasted ctx, or an OtherError.
func (c *Client) AcquireContext(ctx context.Context, name string, opts ...LockOption) (*Lock, error) {
	if err := validName(name); err != nil {
		return nil, &OtherError{err}
	}
	if err := c.checkTable(ctx, false); err != nil {
		return nil, err
	}
	l := &Lock{client: c, name: name, owner: c.owner, heartbeatContext: ctx}
	for _, opt := range opts {
		if opt != nil {
			opt(l)
		}
	}
	if l.heartbeatContext == nil {
		l.heartbeatContext = context.Background()
	}
	if err := c.acquire(ctx, l); err != nil {
		if l.failIfLocked && errors.Is(err, ErrNotAcquired) {
			return newEndedLock(c, name, c.owner, l.data, 0, errNotHeld), err
		}
		return nil, err
	}
	if c.heartbeatFrequency > 0 {
		c.heartbeats.add(l)
	}
	c.stats.acquired.Add(1)
	c.log.Debug("lock acquired", "lock", name, "owner", c.owner, "rvn", l.RecordVersionNumber())
	return l, nil
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
func (c *Client) Do(ctx context.Context, name string, f func(context.Context, *Lock) error, opts ...LockOption) error {
	if f == nil {
		return &OtherError{errors.New("pglock: Do needs a function")}
	}
	l, err := c.AcquireContext(ctx, name, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-l.Done():
			cancel()
		case <-fctx.Done():
		}
	}()
	ferr := f(fctx, l)
	cancel()
	<-watched
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
	c.log.Warn("lock not released after Do; its row expires after a lease", "lock", name, "owner", c.owner, "error", rerr)
	return nil
}

// Release is ReleaseContext with context.Background().
func (c *Client) Release(l *Lock) error {
	return c.ReleaseContext(context.Background(), l)
}

// ReleaseContext stops the lock's heartbeat, waits for it, and releases the
// lock: its row is deleted, or kept with a NULL record version number under
// KeepOnRelease, and waiting clients are woken. It returns an error wrapping
// ErrLockAlreadyReleased when the lock was already released or the row no
// longer carries its record version number (it was lost), and when the lock
// was lost because no heartbeat succeeded for a whole lease: its row is then
// still released if nobody took it over meanwhile. Afterwards the
// lock reports IsReleased in every case but one: when the database could not
// be reached, the error is returned and the lock stays held, so Release may
// be called again. It is safe to call from any goroutine, any number of
// times.
func (c *Client) ReleaseContext(ctx context.Context, l *Lock) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if l.client != c {
		return l.client.ReleaseContext(ctx, l)
	}
	l.mu.Lock()
	if l.releasing {
		l.mu.Unlock()
		return ErrLockAlreadyReleased
	}
	l.releasing = true
	l.mu.Unlock()

	c.heartbeats.remove(l)
	l.opMu.Lock()
	defer l.opMu.Unlock()
	// A lock whose lease ran out (Done is closed, Err tells) still has its
	// row cleaned up, and Release succeeds, when nobody took it over.
	rvn, at, lost := l.state()
	query := c.sql.release
	if l.keepOnRelease {
		query = c.sql.releaseKeep
	}
	affected, err := c.execAffected(ctx, query, l.name, rvn, c.table.channel())
	if err == nil && affected == 0 && !l.unsettledSince().IsZero() {
		// The row may carry the RVN of a heartbeat of unknown outcome.
		var held bool
		if held, err = c.moved(l, heldAt{rvn, at}); held {
			rvn, _, _ = l.state()
			affected, err = c.execAffected(ctx, query, l.name, rvn, c.table.channel())
		}
	}
	if err != nil {
		l.mu.Lock()
		l.releasing = false
		l.mu.Unlock()
		if c.heartbeatFrequency > 0 {
			c.heartbeats.add(l)
		}
		return typeError(fmt.Errorf("pglock: cannot release %q: %w", l.name, err))
	}
	if affected == 0 {
		l.end(errStolen)
		return &OtherError{errStolen}
	}
	if lost {
		l.end(errLeaseExpired)
	}
	l.end(errReleased)
	c.waits.announce(l.name, false) // this client's own waiters need no NOTIFY
	c.stats.released.Add(1)
	c.log.Debug("lock released", "lock", l.name, "owner", l.owner, "rvn", rvn)
	return nil
}

// SendHeartbeat bumps the lock's record version number once, so others see
// it is alive. It returns an error wrapping ErrLockAlreadyReleased, and
// marks the lock released, when the row no longer carries this lock's
// record version number. Any other error (the database is unreachable)
// leaves the lock held: it is lost only when no heartbeat succeeds for a
// whole lease.
func (c *Client) SendHeartbeat(ctx context.Context, l *Lock) error {
	if l == nil || l.client == nil {
		return errNilLock
	}
	if l.client != c {
		return l.client.SendHeartbeat(ctx, l)
	}
	l.opMu.Lock()
	defer l.opMu.Unlock()
	rvn, refreshedAt, ended := l.state()
	if ended {
		return l.Err()
	}
	return c.heartbeatOne(ctx, l, heldAt{rvn, refreshedAt})
}

// heartbeatOne bumps the RVN of l, held at prev, waiting for its row if a
// guarded transaction holds it. l.opMu must be held.
func (c *Client) heartbeatOne(ctx context.Context, l *Lock, prev heldAt) error {
	start := time.Now()
	var newRVN int64
	err := c.retry(ctx, func() error {
		return c.db.QueryRowContext(ctx, c.sql.heartbeat, l.name, prev.rvn).Scan(&newRVN)
	})
	switch {
	case err == nil:
		l.refresh(newRVN, start)
		c.stats.heartbeats.Add(1)
		return nil
	case errors.Is(err, sql.ErrNoRows):
		held, merr := c.moved(l, prev)
		switch {
		case merr != nil:
			return fmt.Errorf("pglock: heartbeat of %q: %w", l.name, merr)
		case !held:
			return &OtherError{errStolen}
		}
		return nil // an earlier heartbeat had landed
	}
	c.stats.heartbeatFailures.Add(1)
	// The UPDATE may have committed before the error: settle it by reading
	// the row back, so a held lock never looks released.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.settleTimeout())
	defer cancel()
	c.settle(sctx, []*Lock{l}, map[*Lock]heldAt{l: prev}, start)
	return typeError(fmt.Errorf("pglock: heartbeat of %q: %w", l.name, err))
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
	if err := c.checkTable(ctx, false); err != nil {
		return nil, err
	}
	var (
		owner sql.NullString
		data  []byte
		rvn   sql.NullInt64
	)
	err := c.retry(ctx, func() error {
		return c.db.QueryRowContext(ctx, c.sql.get, name).Scan(&name, &owner, &data, &rvn)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrLockNotFound
	}
	if err != nil {
		return nil, typeError(fmt.Errorf("pglock: cannot read %q: %w", name, err))
	}
	return newEndedLock(c, name, owner.String, data, rvn.Int64, errNotHeld), nil
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
	err := c.retry(ctx, func() error {
		locks = locks[:0]
		return c.eachRow(ctx, func(rows *sql.Rows) error {
			var (
				name  string
				owner sql.NullString
				data  []byte
				rvn   sql.NullInt64
			)
			if err := rows.Scan(&name, &owner, &data, &rvn); err != nil {
				return err
			}
			locks = append(locks, (*ReadOnlyLock)(newEndedLock(c, name, owner.String, data, rvn.Int64, errNotHeld)))
			return nil
		}, c.sql.getAll)
	})
	if err != nil {
		return nil, typeError(fmt.Errorf("pglock: cannot read locks: %w", err))
	}
	return locks, nil
}

// execAffected runs query (through retry) and returns how many rows it
// affected.
func (c *Client) execAffected(ctx context.Context, query string, args ...any) (int64, error) {
	var affected int64
	err := c.retry(ctx, func() error {
		res, err := c.db.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		affected, err = res.RowsAffected()
		return err
	})
	return affected, err
}

// eachRow runs query and calls scan for each row it returns, then closes
// the rows. Callers run it through retry and reset what scan collects at
// the start of each try.
func (c *Client) eachRow(ctx context.Context, scan func(*sql.Rows) error, query string, args ...any) error {
	rows, err := c.db.QueryContext(ctx, query, args...)
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

// retry runs f until it succeeds, fails with anything but a serialization
// failure, or ctx ends.
func (c *Client) retry(ctx context.Context, f func() error) error {
	backoff := time.Millisecond
	for {
		err := f()
		if err == nil || !isSerializationFailure(err) {
			return err
		}
		c.log.Debug("serialization failure, retrying", "error", err)
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
