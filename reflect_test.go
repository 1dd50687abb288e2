package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// The tests in this file run the package's reflection (reflect.go) against
// the real drivers. Each fails on the Go or pgx version that renames what it
// reads, instead of letting clients fall back to polling or to the caller's
// pool in silence.

// TestConnStringIsRecovered: a pool opened by sql.Open gives back its
// connection string under both drivers; one made by stdlib.OpenDB has none.
func TestConnStringIsRecovered(t *testing.T) {
	dsn := srv.DSN()
	for _, name := range driverNames {
		db, err := sql.Open(name, dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		got, ok := pglock.ConnString(db)
		require.True(t, ok, "%s: the connector no longer exposes the connection string where reflect.go reads it", name)
		require.Equal(t, dsn, got, name)
		require.True(t, pglock.IsTrustedDriver(db), "%s: the driver type is no longer recognised", name)
	}
	cfg, err := pgx.ParseConfig(dsn)
	require.NoError(t, err)
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { _ = db.Close() })
	_, ok := pglock.ConnString(db)
	require.False(t, ok, "stdlib.OpenDB keeps no connection string")
	require.True(t, pglock.IsTrustedDriver(db))
}

// fakeConnector is a connector of a driver that is neither lib/pq nor pgx.
type fakeConnector struct{}

func (fakeConnector) Connect(context.Context) (driver.Conn, error) {
	return nil, errors.New("fake driver: no connections")
}

func (fakeConnector) Driver() driver.Driver { return fakeDriver{} }

type fakeDriver struct{}

func (fakeDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("fake driver: no connections")
}

// TestOtherDriversAreNotTrusted: a driver that is neither lib/pq nor pgx is
// not recognised, and gives no connection string.
func TestOtherDriversAreNotTrusted(t *testing.T) {
	db := sql.OpenDB(fakeConnector{})
	t.Cleanup(func() { _ = db.Close() })
	require.False(t, pglock.IsTrustedDriver(db))
	_, ok := pglock.ConnString(db)
	require.False(t, ok)
}

// TestPoolListenSafety: a LISTEN may keep a connection of a pgx pool only
// when nothing bounds that pool: not SetMaxOpenConns, and not a pgxpool
// behind stdlib.OpenDBFromPool.
func TestPoolListenSafety(t *testing.T) {
	db := openDriver(t, "pgx")
	require.True(t, pglock.PoolListenSafe(db), "an unbounded sql.Open pool")
	db.SetMaxOpenConns(5)
	require.False(t, pglock.PoolListenSafe(db), "a pool bounded by SetMaxOpenConns")

	pool, err := pgxpool.New(testCtx(t), srv.DSN())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	fromPool := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = fromPool.Close() })
	require.False(t, pglock.PoolListenSafe(fromPool), "pgx's stdlib no longer keeps its pgxpool where reflect.go reads it")
}

// TestNotificationWaiterReceives: on a pgx connection the reflected
// WaitForNotification delivers a notification sent by another session; a
// lib/pq connection offers none.
func TestNotificationWaiterReceives(t *testing.T) {
	ctx := testCtx(t)
	db := openDriver(t, "pgx")
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	_, err = conn.ExecContext(ctx, `LISTEN pglock_reflect_probe`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `SELECT pg_notify('pglock_reflect_probe', 'hello')`)
	require.NoError(t, err)
	require.NoError(t, conn.Raw(func(dc any) error {
		wait, ok := pglock.NotificationWaiter(dc)
		require.True(t, ok, "pgx's connection no longer offers Conn().WaitForNotification as reflect.go calls it")
		channel, payload, err := wait(ctx)
		require.NoError(t, err)
		require.Equal(t, "pglock_reflect_probe", channel)
		require.Equal(t, "hello", payload)
		return nil
	}))

	pqConn, err := openDB(t).Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pqConn.Close() })
	require.NoError(t, pqConn.Raw(func(dc any) error {
		_, ok := pglock.NotificationWaiter(dc)
		require.False(t, ok, "lib/pq has no WaitForNotification")
		return nil
	}))
}
