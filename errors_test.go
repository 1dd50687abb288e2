package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestErrorKindsFromRealFaults(t *testing.T) {
	t.Parallel()

	t.Run("NotExistError", func(t *testing.T) {
		db := openDB(t)
		c := newClient(t, db)
		_, err := c.Get("absent")
		var notExist *pglock.NotExistError
		require.ErrorAs(t, err, &notExist)
		assert.ErrorIs(t, err, pglock.ErrLockNotFound)
		assert.Error(t, notExist.Unwrap())
	})

	t.Run("UnavailableError: backend terminated mid-statement", func(t *testing.T) {
		db, app := openApp(t)
		c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
		l, err := c.Acquire("x")
		require.NoError(t, err)
		// Park the heartbeat on a row lock, then terminate its backend.
		// (An idle pooled connection that was terminated is replaced
		// transparently, so only a statement in flight sees the failure.)
		admin := openDB(t)
		tx, err := admin.Begin()
		require.NoError(t, err)
		defer func() { _ = tx.Rollback() }()
		_, err = tx.Exec(`SELECT 1 FROM ` + quote(table) + ` WHERE name = 'x' FOR UPDATE`)
		require.NoError(t, err)
		beat := make(chan error, 1)
		go func() { beat <- c.SendHeartbeat(bg, l) }()
		// database/sql retries a statement whose connection lib/pq reports
		// bad (any FATAL error) on fresh connections, a few times: keep
		// terminating until the failure surfaces.
		deadline := time.After(waitBound)
	terminate:
		for {
			select {
			case err = <-beat:
				break terminate
			case <-deadline:
				_ = tx.Rollback()
				t.Fatalf("heartbeat did not fail: %v", <-beat)
			case <-time.After(10 * time.Millisecond):
				_, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE application_name = $1 AND wait_event_type = 'Lock'`, app)
				require.NoError(t, err)
			}
		}
		var unavailable *pglock.UnavailableError
		require.ErrorAs(t, err, &unavailable, "%v", err)
		assert.False(t, l.IsReleased(), "an unreachable database does not end the lock by itself")
		require.NoError(t, tx.Rollback())
		require.NoError(t, c.SendHeartbeat(bg, l), "the pool reconnects")
		require.NoError(t, l.Close())
	})

	t.Run("FailedPreconditionError and internal retries", func(t *testing.T) {
		db := openDB(t)
		c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
		fn, seq, ctl := quote(table+"_40001"), quote(table+"_fails"), quote(table+"_ctl")
		// A trigger makes the server report real serialization failures
		// (SQLSTATE 40001) for the first fail_first row changes: they
		// cannot be provoked on demand otherwise.
		mustExec(t, db, `CREATE SEQUENCE `+seq)
		mustExec(t, db, `CREATE TABLE `+ctl+` (fail_first bigint)`)
		mustExec(t, db, `INSERT INTO `+ctl+` VALUES (3)`)
		mustExec(t, db, `CREATE FUNCTION `+fn+`() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF nextval('`+seq+`') <= (SELECT fail_first FROM `+ctl+`) THEN
		RAISE EXCEPTION 'tests: injected serialization failure' USING ERRCODE = '40001';
	END IF;
	RETURN COALESCE(NEW, OLD);
END $$`)
		t.Cleanup(func() {
			_, _ = db.Exec(`DROP FUNCTION ` + fn + ` CASCADE; DROP SEQUENCE ` + seq + `; DROP TABLE ` + ctl)
		})
		mustExec(t, db, `CREATE TRIGGER fail BEFORE INSERT OR UPDATE OR DELETE ON `+quote(table)+` FOR EACH ROW EXECUTE FUNCTION `+fn+`()`)

		// The first 3 statements fail with 40001: retried, not surfaced.
		l, err := c.AcquireContext(testCtx(t), "x")
		require.NoError(t, err, "serialization failures are retried")
		var fails int64
		require.NoError(t, db.QueryRow(`SELECT last_value FROM `+seq).Scan(&fails))
		assert.GreaterOrEqual(t, fails, int64(4), "the failures did happen")
		require.NoError(t, c.SendHeartbeat(bg, l))

		// Failing for ever: the retries run out with the ctx.
		mustExec(t, db, `UPDATE `+ctl+` SET fail_first = 1000000000`)
		// The ctx may also end while a statement is in flight, and then
		// the last error is the ctx's: try until one attempt ends between
		// retries, as most do.
		var failed *pglock.FailedPreconditionError
		for try := 0; try < 20 && failed == nil; try++ {
			ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
			err = c.ReleaseContext(ctx, l)
			cancel()
			require.Error(t, err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			errors.As(err, &failed)
		}
		require.NotNil(t, failed, "a serialization failure outlasting the ctx surfaces as FailedPreconditionError")
		assert.True(t, l.IsReleased(), "a release whose statement did not happen ends the lock all the same")
		mustExec(t, db, `DROP TRIGGER fail ON `+quote(table))
		require.NoError(t, c.Release(l), "and it can be released again")
	})

	t.Run("OtherError", func(t *testing.T) {
		db := openDB(t)
		c, err := pglock.New(db, pglock.WithCustomTable(tableName(t))) // never created
		require.NoError(t, err)
		var other *pglock.OtherError
		_, err = c.Acquire("x")
		require.ErrorAs(t, err, &other)
		_, err = c.Get("x")
		require.ErrorAs(t, err, &other)
		assert.NotErrorIs(t, err, pglock.ErrLockNotFound, "a missing table is not a missing lock")
		_, err = c.Acquire("bad\x00name")
		require.ErrorAs(t, err, &other)
		assert.ErrorIs(t, err, pglock.ErrInvalidName)
		assert.Error(t, other.Unwrap())
	})

}

// TestErrorClassificationAlikeUnderBothDrivers checks that real
// serialization failures and connection failures are classified alike under
// lib/pq and pgx.
func TestErrorClassificationAlikeUnderBothDrivers(t *testing.T) {
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

// classifyClosedPort points a client at a port nobody listens on: New does
// not connect, and every call that does fails with UnavailableError.
func classifyClosedPort(t *testing.T, driverName string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	dsn := "postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=5"
	db, err := sql.Open(driverName, dsn)
	require.NoError(t, err)
	defer db.Close()
	c, err := pglock.New(db, pglock.WithCustomTable(tableName(t)))
	require.NoError(t, err, "New does not connect")
	_, err = c.Get("x")
	require.Error(t, err)
	var unavailable *pglock.UnavailableError
	require.ErrorAs(t, err, &unavailable, "%T: %v", err, err)
	require.Contains(t, err.Error(), "refused")
	for name, call := range map[string]func() error{
		"Acquire":        func() error { _, err := c.Acquire("x"); return err },
		"Get":            func() error { _, err := c.Get("x"); return err },
		"GetAllLocks":    func() error { _, err := c.GetAllLocks(); return err },
		"CreateTable":    c.CreateTable,
		"TryCreateTable": c.TryCreateTable,
		"DropTable":      c.DropTable,
		"Do": func() error {
			return c.Do(bg, "x", func(context.Context, *pglock.Lock) error { return nil })
		},
	} {
		err := call()
		assert.ErrorAs(t, err, &unavailable, "%s: %T: %v", name, err, err)
	}
}
