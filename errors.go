package pglock

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// Sentinel errors. Test for them with errors.Is: every error this package
// returns wraps its sentinel, whatever kind wraps it in turn.
var (
	// ErrNotPostgreSQLDriver is returned by New when the *sql.DB does not use
	// a PostgreSQL driver this package trusts (lib/pq or pgx v5's stdlib).
	ErrNotPostgreSQLDriver = errors.New("pglock: this is not a PostgreSQL connection")

	// ErrNotAcquired is returned when a lock could not be acquired: it is
	// held by someone else and FailIfLocked was given, or the context ended
	// first (then ctx.Err() is wrapped as well).
	ErrNotAcquired = errors.New("pglock: lock not acquired")

	// ErrLockAlreadyReleased is returned when a lock no longer holds its row:
	// it was released, or it was lost because someone else took it over.
	ErrLockAlreadyReleased = errors.New("pglock: lock is already released")

	// ErrLockNotFound is returned by Get and GetData when no row has the name.
	ErrLockNotFound = &NotExistError{errors.New("pglock: lock not found")}

	// ErrDurationTooSmall is returned by New when the lease is shorter than
	// MinLeaseDuration, or heartbeats are on and the lease is shorter than
	// twice the heartbeat frequency. A negative heartbeat frequency is not
	// refused: it turns heartbeats off, as zero does. The error's message
	// names the option that is wrong and why; the sentinel's own text is
	// the original library's.
	ErrDurationTooSmall = errors.New("pglock: heartbeat period is too small compared to the lease duration")

	// ErrNilDB is returned by New and UnsafeNew when the *sql.DB is nil. It
	// wraps ErrNotPostgreSQLDriver, which the original library returned in
	// that case.
	ErrNilDB = fmt.Errorf("%w: nil *sql.DB", ErrNotPostgreSQLDriver)

	// ErrInvalidName is returned when a lock name or owner cannot be stored:
	// it is empty, longer than 255 bytes, not valid UTF-8 or holds a NUL byte.
	ErrInvalidName = errors.New("pglock: invalid name")

	// ErrPermitsMismatch is returned by a Semaphore's Acquire and Holders
	// when the number of permits recorded for its name differs from its
	// own: clients that disagree on it must not share the semaphore.
	ErrPermitsMismatch = errors.New("pglock: semaphore's number of permits differs from the one recorded")

	// ErrClosed is wrapped in the errors of calls that need the client's
	// background work after Close: AcquireContext, and waits it ended.
	ErrClosed = errors.New("pglock: client closed")

	// ErrInvalidTableName is returned by New when WithCustomTable was given a
	// name PostgreSQL cannot hold (empty, NUL bytes, parts over 63 bytes) or
	// one in a pg_* schema, and by the first call that uses the table when
	// the name resolves to a relation of the system (see WithCustomTable).
	ErrInvalidTableName = errors.New("pglock: invalid table name")
)

// NotExistError means the thing asked for does not exist.
type NotExistError struct {
	error
}

// Unwrap returns the wrapped error.
func (err *NotExistError) Unwrap() error { return err.error }

// UnavailableError means the database could not be reached or the connection
// broke (refused, reset, restarted, terminated backend). The outcome of the
// statement that met it may be unknown.
type UnavailableError struct {
	error
}

// Unwrap returns the wrapped error.
func (err *UnavailableError) Unwrap() error { return err.error }

// FailedPreconditionError means a statement failed on a serialization
// conflict (SQLSTATE 40001). Such statements are retried internally, so it is
// only seen when the retries ran out with the context.
type FailedPreconditionError struct {
	error
}

// Unwrap returns the wrapped error.
func (err *FailedPreconditionError) Unwrap() error { return err.error }

// OtherError wraps any error that is not one of the other kinds.
type OtherError struct {
	error
}

// Unwrap returns the wrapped error.
func (err *OtherError) Unwrap() error { return err.error }

// isUnavailable reports whether err means the server could not be reached or
// the connection broke: the operation may be retried later.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if state := sqlState(err); state != "" {
		switch {
		case strings.HasPrefix(state, "08"), // connection exception
			state == "57P01", // admin_shutdown (pg_terminate_backend, stop)
			state == "57P02", // crash_shutdown
			state == "57P03", // cannot_connect_now (starting up)
			state == "53300": // too_many_connections
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) ||
		errors.As(err, &netErr)
}

// typeError wraps err in the kind that describes it. Errors that already have
// a kind, and nil, are returned as they are.
func typeError(err error) error {
	if err == nil {
		return nil
	}
	var (
		notExist    *NotExistError
		unavailable *UnavailableError
		failedPre   *FailedPreconditionError
		other       *OtherError
	)
	switch {
	case errors.As(err, &notExist), errors.As(err, &unavailable),
		errors.As(err, &failedPre), errors.As(err, &other):
		return err
	}
	err = withTableHint(err)
	switch {
	case isSerializationFailure(err):
		return &FailedPreconditionError{err}
	case isUnavailable(err):
		return &UnavailableError{err}
	default:
		return &OtherError{err}
	}
}

// contextError reports ctx's end as a pglock error that wraps both sentinel
// and ctx's error (its cause, when it has one: ErrClosed when Close ended
// it), or nil while ctx is live.
func contextError(ctx context.Context, sentinel error) error {
	if err := ctx.Err(); err != nil {
		if cause := context.Cause(ctx); cause != nil && cause != err { //nolint:errorlint // identity: a cause set apart from ctx.Err()
			return &OtherError{errors.Join(sentinel, err, cause)}
		}
		return &OtherError{errors.Join(sentinel, err)}
	}
	return nil
}

// Why a lock ended; each wraps ErrLockAlreadyReleased.
var (
	errReleased     = fmt.Errorf("%w: released", ErrLockAlreadyReleased)
	errLeaseExpired = fmt.Errorf("%w: lost: no heartbeat succeeded for a whole lease", ErrLockAlreadyReleased)
	errStolen       = fmt.Errorf("%w: lost: the row no longer carries this lock's record version number", ErrLockAlreadyReleased)
	errNotHeld      = fmt.Errorf("%w: the lock was never held", ErrLockAlreadyReleased)
	errForced       = fmt.Errorf("%w by ForceRelease", errReleased)
	errNilLock      = fmt.Errorf("%w: nil lock", ErrLockAlreadyReleased)
)

// errUnsettled: a lock's row moved, maybe by our own heartbeat whose outcome
// is unknown, and reading it back failed.
var errUnsettled = errors.New("pglock: cannot tell whether the lock is still held: its last heartbeat's outcome is unknown and the database cannot be read")

// missingTableHint is added to errors that show the lock table, or its
// record version number sequence, missing (SQLSTATE 42P01).
const missingTableHint = "the lock table or its sequence does not exist: create them with Client.CreateTable or Client.TryCreateTable, or with `pglock init`"

// withTableHint adds missingTableHint to an error of a missing relation.
func withTableHint(err error) error {
	if sqlState(err) == "42P01" {
		return fmt.Errorf("%w (%s)", err, missingTableHint)
	}
	return err
}

// notAcquiredError is an acquisition that failed for another reason than
// the lock being held or the context ending (a database error, a name that
// cannot be stored): it wraps that reason, whose text it has, and
// ErrNotAcquired, as every error of an acquisition does.
type notAcquiredError struct{ err error }

func (e *notAcquiredError) Error() string { return e.err.Error() }

// Unwrap returns the reason and ErrNotAcquired.
func (e *notAcquiredError) Unwrap() []error { return []error{e.err, ErrNotAcquired} }
