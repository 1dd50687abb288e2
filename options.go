package pglock

import (
	"context"
	"log/slog"
	"reflect"
	"time"
)

// Defaults used by New when no option overrides them.
const (
	// DefaultTableName is the table locks are kept in.
	DefaultTableName = "locks"
	// DefaultLeaseDuration is how long a lock whose record version number
	// does not change may stay before others take it over.
	DefaultLeaseDuration = 20 * time.Second
	// DefaultHeartbeatFrequency is how often a held lock's record version
	// number is bumped.
	DefaultHeartbeatFrequency = 5 * time.Second
	// MinLeaseDuration is the shortest lease New accepts: a lock must
	// outlive the statement that takes it, and every statement of a client
	// is bounded by two leases, so a shorter lease would end acquisitions
	// on their own bound rather than on the caller's context.
	MinLeaseDuration = 100 * time.Millisecond
)

// ClientOption reconfigures the lock client on creation.
type ClientOption func(*Client)

// WithLeaseDuration sets how long a lock lives without a heartbeat before
// others may take it over. Clients sharing a table must use the same lease:
// a waiter times the lease with its own setting. It must be at least
// MinLeaseDuration and, when heartbeats are on, at least twice the
// heartbeat frequency; New refuses other leases with ErrDurationTooSmall.
func WithLeaseDuration(d time.Duration) ClientOption {
	return func(c *Client) { c.leaseDuration = d }
}

// WithHeartbeatFrequency sets how often held locks are refreshed in the
// background. Zero (or a negative value, as in the original library) turns
// the background heartbeat off: the caller must then call SendHeartbeat
// within every lease or lose the lock.
func WithHeartbeatFrequency(d time.Duration) ClientOption {
	return func(c *Client) { c.heartbeatFrequency = d }
}

// WithCustomTable sets the table the client works on. A name may be
// schema-qualified ("myschema.locks"); unquoted parts fold to lower case and
// double-quoted parts are taken as they are, as PostgreSQL reads them. Any
// other text is taken as one quoted identifier, so it can never change the
// SQL the client sends.
//
// New refuses, with ErrInvalidTableName, names PostgreSQL cannot hold and
// names in a pg_* schema (pg_catalog, pg_toast, or pg_temp, whose tables
// other sessions cannot see). An unqualified name starting with pg_ (or one
// in information_schema) is looked up once, by the client's first call that
// uses the table: it fails with ErrInvalidTableName if the name resolves
// through search_path to a relation of the system, such as pg_locks, and
// works like any other name otherwise.
func WithCustomTable(tableName string) ClientOption {
	return func(c *Client) { c.tableName = tableName }
}

// WithOwner sets the owner string stored with every lock this client holds.
// It must be at most 255 bytes of UTF-8 without NUL. By default, and for an
// empty owner as in the original library, each client gets a random owner
// ("pglock-" and a random number). Give every client its
// own owner: after a heartbeat whose outcome is unknown, a client recognises
// its own refresh of a row by the owner.
func WithOwner(owner string) ClientOption {
	return func(c *Client) { c.owner = owner }
}

// WithSessionDSN sets the connection string of the connections the client
// opens for itself: the LISTEN session that wakes its waiters when a lock
// is released, and the connections that heartbeat and release its held
// locks, so that a busy pool or a dead pooled connection never holds them
// up. It must reach the same database as the *sql.DB, directly or through
// a pooler in session mode: give it when the *sql.DB goes through a pooler
// in transaction mode, where LISTEN cannot work. Under lib/pq, New refuses
// a connection string the driver cannot parse; its error, like every
// message of the client, never shows the string or its password.
//
// Without it the client reuses the connection string the *sql.DB was
// opened with by sql.Open, which it reads from the *sql.DB (see the
// package documentation, Connections). A *sql.DB made by sql.OpenDB has
// none: the client then heartbeats on connections of that pool, where the
// caller's own work can delay them, and its waiters poll unless the driver
// is pgx and the pool has no limit on open connections.
func WithSessionDSN(dsn string) ClientOption {
	return func(c *Client) { c.sessionDSN = dsn }
}

// WithLogger sets a logger that receives every log line, of any level, as
// one Println call with a pre-formatted line: the message followed by
// key=value pairs. A nil l keeps the client silent.
//
// Deprecated: use WithSlog, or WithLevelLogger.
func WithLogger(l Logger) ClientOption {
	return func(c *Client) {
		if l == nil {
			c.log = nil
			return
		}
		c.log = slog.New(newPrintlnHandler(l))
	}
}

// WithLevelLogger sets a logger with Debug and Error levels. A *slog.Logger
// given here, or any logger with a Handler() slog.Handler method (such as a
// struct embedding *slog.Logger), is used as a structured logger, exactly as
// WithSlog would, so it never logs "!BADKEY". Any other LevelLogger is called
// printf-style, as the original library did: Debug("%s", line) for Debug and
// Warn records, Error("%s", line) for Error records, where line is the
// message followed by key=value pairs. A nil l keeps the client silent.
func WithLevelLogger(l LevelLogger) ClientOption {
	return func(c *Client) {
		switch l := l.(type) {
		case nil:
			c.log = nil
		case *slog.Logger:
			c.log = l
		case interface{ Handler() slog.Handler }:
			if v := reflect.ValueOf(l); v.Kind() == reflect.Pointer && v.IsNil() {
				c.log = nil
				return
			}
			if h := l.Handler(); h != nil {
				c.log = slog.New(h)
			}
		default:
			c.log = slog.New(newLevelHandler(l))
		}
	}
}

// WithSlog sets a structured logger. Records carry attributes: "lock" (the
// name), "owner", "rvn" (record version number) and, where they apply,
// durations ("waited", "lease", "elapsed", "since_refresh") and "error". The
// lock's data payload is never logged. Routine events (acquired, waiting,
// released, a failed heartbeat that will be retried) are Debug; a held lock
// that is lost is Warn. The client is silent without a logger, and a nil l
// keeps it so.
func WithSlog(l *slog.Logger) ClientOption {
	return func(c *Client) { c.log = l }
}

// LockOption reconfigures how a lock is acquired and released.
type LockOption func(*Lock)

// FailIfLocked makes Acquire return ErrNotAcquired at once instead of waiting
// while the lock is held by someone else. A lock whose holder this client
// watched stay silent for a whole lease is taken over all the same, when
// this client looked at it again within the last two leases: a sighting
// older than that is forgotten.
func FailIfLocked() LockOption {
	return func(l *Lock) { l.failIfLocked = true }
}

// WithData sets the data stored with a lock on a new row. A row kept with
// KeepOnRelease keeps its own data unless ReplaceData is given too. The
// slice is copied.
func WithData(data []byte) LockOption {
	return func(l *Lock) { l.data = append([]byte(nil), data...) }
}

// ReplaceData makes the data given with WithData overwrite whatever data the
// row holds when the lock is acquired.
func ReplaceData() LockOption {
	return func(l *Lock) { l.replaceData = true }
}

// KeepOnRelease keeps the row and its data when the lock is released: its
// record version number becomes NULL, so anyone may acquire it at once, and
// GetData still reads the data.
func KeepOnRelease() LockOption {
	return func(l *Lock) { l.keepOnRelease = true }
}

// WithCustomHeartbeatContext makes the background heartbeat of the lock run
// while ctx lives, instead of while the context given to AcquireContext
// lives. When that context ends the heartbeat stops, and the lock is lost a
// lease after its last heartbeat unless it is released first.
func WithCustomHeartbeatContext(ctx context.Context) LockOption {
	return func(l *Lock) { l.heartbeatContext = ctx }
}

// announceAcquisition makes an acquisition notify the release channel, so
// that election observers learn of a new leader at once.
func announceAcquisition(l *Lock) { l.announce = true }
