package pglock

import (
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
)

// ClientOption reconfigures the lock client on creation.
type ClientOption func(*Client)

// WithLeaseDuration sets how long a lock lives without a heartbeat before
// others may take it over. Clients sharing a table must use the same lease:
// a waiter times the lease with its own setting. It must be positive and, when
// heartbeats are on, at least twice the heartbeat frequency.
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
// It must be at most 255 bytes of UTF-8 without NUL. By default each client
// gets a random owner ("pglock-" and a random number). Give every client its
// own owner: after a heartbeat whose outcome is unknown, a client recognises
// its own refresh of a row by the owner.
func WithOwner(owner string) ClientOption {
	return func(c *Client) { c.owner = owner }
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
