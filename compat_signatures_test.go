package pglock_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"cirello.io/pglock"
)

// The original library's public surface, as a program written for it uses
// it. This file compiles only if every name keeps the original's signature:
// a change that would break such a program breaks the build of the tests.
var (
	_ func(*sql.DB, ...pglock.ClientOption) (*pglock.Client, error) = pglock.New
	_ func(*sql.DB, ...pglock.ClientOption) (*pglock.Client, error) = pglock.UnsafeNew

	_ func(time.Duration) pglock.ClientOption      = pglock.WithLeaseDuration
	_ func(time.Duration) pglock.ClientOption      = pglock.WithHeartbeatFrequency
	_ func(string) pglock.ClientOption             = pglock.WithCustomTable
	_ func(string) pglock.ClientOption             = pglock.WithOwner
	_ func(pglock.Logger) pglock.ClientOption      = pglock.WithLogger
	_ func(pglock.LevelLogger) pglock.ClientOption = pglock.WithLevelLogger

	_ func() pglock.LockOption                                                 = pglock.FailIfLocked
	_ func([]byte) pglock.LockOption                                           = pglock.WithData
	_ func() pglock.LockOption                                                 = pglock.ReplaceData
	_ func() pglock.LockOption                                                 = pglock.KeepOnRelease
	_ func(context.Context) pglock.LockOption                                  = pglock.WithCustomHeartbeatContext
	_ func(*pglock.Client) error                                               = (*pglock.Client).CreateTable
	_ func(*pglock.Client) error                                               = (*pglock.Client).TryCreateTable
	_ func(*pglock.Client) error                                               = (*pglock.Client).DropTable
	_ func(*pglock.Client, string, ...pglock.LockOption) (*pglock.Lock, error) = (*pglock.Client).Acquire

	_ func(*pglock.Client, context.Context, string, ...pglock.LockOption) (*pglock.Lock, error)                            = (*pglock.Client).AcquireContext
	_ func(*pglock.Client, context.Context, string, func(context.Context, *pglock.Lock) error, ...pglock.LockOption) error = (*pglock.Client).Do

	_ func(*pglock.Client, *pglock.Lock) error                              = (*pglock.Client).Release
	_ func(*pglock.Client, context.Context, *pglock.Lock) error             = (*pglock.Client).ReleaseContext
	_ func(*pglock.Client, context.Context, *pglock.Lock) error             = (*pglock.Client).SendHeartbeat
	_ func(*pglock.Client, string) (*pglock.Lock, error)                    = (*pglock.Client).Get
	_ func(*pglock.Client, context.Context, string) (*pglock.Lock, error)   = (*pglock.Client).GetContext
	_ func(*pglock.Client, string) ([]byte, error)                          = (*pglock.Client).GetData
	_ func(*pglock.Client, context.Context, string) ([]byte, error)         = (*pglock.Client).GetDataContext
	_ func(*pglock.Client) ([]*pglock.ReadOnlyLock, error)                  = (*pglock.Client).GetAllLocks
	_ func(*pglock.Client, context.Context) ([]*pglock.ReadOnlyLock, error) = (*pglock.Client).GetAllLocksContext

	_ func(*pglock.Lock) []byte = (*pglock.Lock).Data
	_ func(*pglock.Lock) error  = (*pglock.Lock).Close
	_ func(*pglock.Lock) bool   = (*pglock.Lock).IsReleased
	_ func(*pglock.Lock) string = (*pglock.Lock).Owner
	_ func(*pglock.Lock) int64  = (*pglock.Lock).RecordVersionNumber

	_ func(*pglock.ReadOnlyLock) string = (*pglock.ReadOnlyLock).Name
	_ func(*pglock.ReadOnlyLock) []byte = (*pglock.ReadOnlyLock).Data
	_ func(*pglock.ReadOnlyLock) string = (*pglock.ReadOnlyLock).Owner

	_ error = pglock.ErrNotPostgreSQLDriver
	_ error = pglock.ErrNotAcquired
	_ error = pglock.ErrLockAlreadyReleased
	_ error = pglock.ErrDurationTooSmall

	_ *pglock.NotExistError       = pglock.ErrLockNotFound
	_ interface{ Unwrap() error } = (*pglock.NotExistError)(nil)
	_ interface{ Unwrap() error } = (*pglock.UnavailableError)(nil)
	_ interface{ Unwrap() error } = (*pglock.FailedPreconditionError)(nil)
	_ interface{ Unwrap() error } = (*pglock.OtherError)(nil)

	_ pglock.LevelLogger = levelLogger{}
	_ pglock.Logger      = printlnLogger{}
)

type levelLogger struct{}

func (levelLogger) Debug(string, ...any) {}
func (levelLogger) Error(string, ...any) {}

type printlnLogger struct{}

func (printlnLogger) Println(...any) {}

// TestCoreOriginalConstants pins the original's constants.
func TestCoreOriginalConstants(t *testing.T) {
	t.Parallel()
	if pglock.DefaultTableName != "locks" || pglock.DefaultLeaseDuration != 20*time.Second || pglock.DefaultHeartbeatFrequency != 5*time.Second {
		t.Fatalf("constants differ from the original: %q %v %v", pglock.DefaultTableName, pglock.DefaultLeaseDuration, pglock.DefaultHeartbeatFrequency)
	}
	var _ pglock.ClientOption = func(*pglock.Client) {} // ClientOption is func(*Client)
	var _ pglock.LockOption = func(*pglock.Lock) {}     // LockOption is func(*Lock)
	var _ = pglock.ReadOnlyLock(pglock.Lock{})          // ReadOnlyLock is a Lock
}
