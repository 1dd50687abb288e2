package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestErrorClassification checks that real serialization failures and
// connection failures are classified alike under lib/pq and pgx.
func TestErrorClassification(t *testing.T) {
	t.Parallel()
	for _, driverName := range driverNames {
		t.Run(driverName, func(t *testing.T) {
			t.Parallel()
			t.Run("SerializationFailure", func(t *testing.T) {
				t.Parallel()
				classifySerializationFailure(t, openDriver(t, driverName))
			})
			t.Run("TerminatedBackend", func(t *testing.T) {
				t.Parallel()
				classifyTerminatedBackend(t, openDriver(t, driverName))
			})
			t.Run("ClosedPort", func(t *testing.T) {
				t.Parallel()
				classifyClosedPort(t, driverName)
			})
		})
	}
}

// classifySerializationFailure provokes a real SQLSTATE 40001: two SERIALIZABLE
// transactions each read what the other writes (write skew).
func classifySerializationFailure(t *testing.T, db *sql.DB) {
	table := tableName(t)
	_, err := db.Exec(fmt.Sprintf(`CREATE TABLE %q (v int)`, table))
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.Exec(fmt.Sprintf(`DROP TABLE %q`, table)) })
	serializable := &sql.TxOptions{Isolation: sql.LevelSerializable}
	tx1, err := db.BeginTx(bg, serializable)
	require.NoError(t, err)
	defer tx1.Rollback() //nolint:errcheck // cleanup of a transaction that may have failed
	tx2, err := db.BeginTx(bg, serializable)
	require.NoError(t, err)
	defer tx2.Rollback() //nolint:errcheck // cleanup of a transaction that may have failed
	var n int
	for _, tx := range []*sql.Tx{tx1, tx2} {
		require.NoError(t, tx.QueryRow(fmt.Sprintf(`SELECT count(*) FROM %q`, table)).Scan(&n))
	}
	for i, tx := range []*sql.Tx{tx1, tx2} {
		_, err = tx.Exec(fmt.Sprintf(`INSERT INTO %q VALUES ($1)`, table), i)
		if err != nil {
			break
		}
	}
	if err == nil {
		require.NoError(t, tx1.Commit())
		err = tx2.Commit()
	}
	require.Error(t, err, "write skew between two SERIALIZABLE transactions fails one of them")
	err = pglock.ClassifyError(err)
	var failedPre *pglock.FailedPreconditionError
	require.ErrorAs(t, err, &failedPre, "%v", err)
	var unavailable *pglock.UnavailableError
	require.NotErrorAs(t, err, &unavailable)
}

// classifyTerminatedBackend kills the server process behind a connection with
// pg_terminate_backend and classifies what the next statement on it meets.
func classifyTerminatedBackend(t *testing.T, db *sql.DB) {
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	var ok bool
	require.NoError(t, db.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
	require.True(t, ok)
	// The backend exits asynchronously: wait until it is gone.
	require.Eventually(t, func() bool {
		var alive bool
		err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&alive)
		return err == nil && !alive
	}, 20*time.Second, 10*time.Millisecond)
	var one int
	err = conn.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
	require.Error(t, err)
	err = pglock.ClassifyError(err)
	var unavailable *pglock.UnavailableError
	require.ErrorAs(t, err, &unavailable, "%T: %v", err, err)
	t.Logf("terminated backend: %v", err)
}

// classifyClosedPort points a client at a port nobody listens on.
func classifyClosedPort(t *testing.T, driverName string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	dsn := "postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=5"
	db, err := sql.Open(driverName, dsn)
	require.NoError(t, err)
	defer db.Close()
	c, err := pglock.New(db)
	require.NoError(t, err)
	_, err = c.Get("x")
	require.Error(t, err)
	var unavailable *pglock.UnavailableError
	require.ErrorAs(t, err, &unavailable, "%T: %v", err, err)
	require.Contains(t, err.Error(), "refused")
	_, err = c.Acquire("x")
	require.ErrorAs(t, err, &unavailable, "%T: %v", err, err)
}
