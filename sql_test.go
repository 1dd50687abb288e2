package pglock_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/sqlcount"
)

// TestOneStatementPerOperation counts the statements each operation
// sends: an uncontended acquire, one background heartbeat of one lock, a
// SendHeartbeat and a release each cost exactly one.
func TestOneStatementPerOperation(t *testing.T) {
	t.Parallel()
	table, _ := newTable(t)
	db, cnt := countedDB(t)
	const freq = 200 * time.Millisecond
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(10*time.Second), pglock.WithHeartbeatFrequency(freq))

	// Acquire, uncontended: a fresh row.
	hctx, stopHeartbeat := context.WithCancel(bg)
	defer stopHeartbeat()
	cnt.Reset()
	l, err := c.Acquire("one", pglock.WithCustomHeartbeatContext(hctx))
	require.NoError(t, err)
	require.EqualValues(t, 1, cnt.Statements(), "acquire")

	// Background heartbeat: let it tick at least once, then stop it, so
	// that the count no longer moves, and compare.
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= 1 }, 10*time.Second, time.Millisecond)
	stopHeartbeat()
	time.Sleep(3 * freq) // the next tick drops the lock without a statement
	// A statement counts when sent, a heartbeat when it returned: wait for
	// the last one in flight, if any, then for nothing more to happen.
	var beats int64
	require.Eventually(t, func() bool {
		beats = c.Stats().Heartbeats
		return cnt.Statements() == 1+beats
	}, 10*time.Second, time.Millisecond, "one statement per background heartbeat of one lock")
	time.Sleep(2 * freq)
	require.Equal(t, 1+beats, cnt.Statements(), "the heartbeat stopped with its context")
	require.Equal(t, beats, c.Stats().Heartbeats)

	cnt.Reset()
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.EqualValues(t, 1, cnt.Statements(), "SendHeartbeat")

	// A contended FailIfLocked attempt.
	other := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	cnt.Reset()
	_, err = other.Acquire("one", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.EqualValues(t, 1, cnt.Statements(), "contended FailIfLocked")

	cnt.Reset()
	require.NoError(t, c.Release(l))
	require.EqualValues(t, 1, cnt.Statements(), "release")

	// KeepOnRelease: acquire over a kept row and release keeping it.
	nohb := unsafeClient(t, db, table, pglock.WithHeartbeatFrequency(0))
	l, err = nohb.Acquire("kept", pglock.KeepOnRelease(), pglock.WithData([]byte("d")))
	require.NoError(t, err)
	require.NoError(t, nohb.Release(l))
	cnt.Reset()
	l, err = nohb.Acquire("kept", pglock.KeepOnRelease())
	require.NoError(t, err)
	require.Equal(t, []byte("d"), l.Data())
	require.EqualValues(t, 1, cnt.Statements(), "acquire over a kept row")
	cnt.Reset()
	require.NoError(t, nohb.Release(l))
	require.EqualValues(t, 1, cnt.Statements(), "release keeping the row")
}

// TestHeartbeatBatchFindsRowsByPrimaryKey checks that the batched heartbeat
// finds its rows through the primary key: on a 10,000-row table, a batch of
// 1000 locks must not scan the whole table.
func TestHeartbeatBatchFindsRowsByPrimaryKey(t *testing.T) {
	t.Parallel()
	table, db := newTable(t)
	query := heartbeatBatchSQL(t, table)
	_, err := db.Exec(`INSERT INTO ` + pq.QuoteIdentifier(table) + ` (name, record_version_number, owner)
		SELECT 'n' || i, i, 'o' FROM generate_series(1, 10000) AS i`)
	require.NoError(t, err)
	names := make(pq.StringArray, 1000)
	rvns := make(pq.Int64Array, 1000)
	for i := range names {
		names[i], rvns[i] = fmt.Sprintf("n%d", 1+i*7), int64(1+i*7)
	}
	for _, analyzed := range []bool{true, false} {
		if analyzed {
			_, err := db.Exec(`ANALYZE ` + pq.QuoteIdentifier(table))
			require.NoError(t, err)
		}
		text := explain(t, db, query, names, rvns, pq.QuoteIdentifier(table+"_rvn"), "o")
		require.NotContains(t, text, "Seq Scan", "analyzed=%v\n%s", analyzed, text)
		require.Contains(t, text, "Index Scan using "+table+"_pkey", "analyzed=%v\n%s", analyzed, text)
	}
}

// heartbeatBatchSQL returns the text of the background heartbeat
// statement of a client on table, as the client sends it.
func heartbeatBatchSQL(t *testing.T, table string) string {
	t.Helper()
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	var rec recorder
	cnt.SetObserver(rec.observe)
	l, err := c.Acquire("plan-probe")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, c.Release(l))
	cnt.SetObserver(nil)
	events := rec.take()
	for i := range events {
		if strings.Contains(events[i].Query, "unnest") {
			return events[i].Query
		}
	}
	t.Fatal("no heartbeat batch statement seen")
	return ""
}

// explain returns the plan PostgreSQL chooses for query, one line per
// plan node, with the long array of names cut short.
func explain(t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `EXPLAIN `+query, args...)
	require.NoError(t, err)
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		if i := strings.Index(line, "ANY ('{"); i >= 0 { // the 1000 names
			line = line[:i] + "ANY (...))"
		}
		plan = append(plan, line)
	}
	require.NoError(t, rows.Err())
	return strings.Join(plan, "\n")
}

// TestCountingDriverCountsEveryStatement checks the statement counter the
// statement-count tests rely on: every Exec and Query counts once, prepared
// or not, and an injected failure comes after the statement committed.
func TestCountingDriverCountsEveryStatement(t *testing.T) {
	t.Parallel()
	for _, open := range []struct {
		name string
		fn   func(string) (*sql.DB, *sqlcount.Counter, error)
	}{
		{"Open", sqlcount.Open},
		{"OpenConnector", sqlcount.OpenConnector},
	} {
		t.Run(open.name, func(t *testing.T) {
			db, cnt, err := open.fn(srv.DSN())
			require.NoError(t, err)
			defer db.Close()
			table := tableName(t)
			_, err = db.Exec(`CREATE TABLE ` + table + ` (k int PRIMARY KEY)`)
			require.NoError(t, err)
			defer db.Exec(`DROP TABLE ` + table)
			require.EqualValues(t, 1, cnt.Statements())

			cnt.Reset()
			_, err = db.Exec(`INSERT INTO `+table+` VALUES ($1)`, 1)
			require.NoError(t, err)
			var k int
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = $1`, 1).Scan(&k))
			func() {
				st, err := db.Prepare(`SELECT k FROM ` + table + ` WHERE k = $1`)
				require.NoError(t, err)
				defer func() { require.NoError(t, st.Close()) }()
				require.NoError(t, st.QueryRow(1).Scan(&k))
			}()
			tx, err := db.Begin()
			require.NoError(t, err)
			_, err = tx.Exec(`INSERT INTO `+table+` VALUES ($1)`, 2)
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			require.EqualValues(t, 4, cnt.Statements())

			// A failure injected after the statement: the row is there.
			boom := errors.New("boom")
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			cnt.SetFailAfter(func(string, []driver.NamedValue) error { cancel(); return boom })
			err = db.QueryRowContext(ctx, `INSERT INTO `+table+` VALUES ($1) RETURNING k`, 3).Scan(&k)
			require.ErrorIs(t, err, boom)
			require.Error(t, ctx.Err())
			cnt.SetFailAfter(nil)
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = 3`).Scan(&k))

			var rec recorder
			cnt.SetObserver(rec.observe)
			require.NoError(t, db.QueryRow(`SELECT k FROM `+table+` WHERE k = $1`, 2).Scan(&k))
			cnt.SetObserver(nil)
			ev := rec.take()
			require.Len(t, ev, 1)
			require.Equal(t, [][]driver.Value{{int64(2)}}, ev[0].Rows)
			require.False(t, ev[0].End.Before(ev[0].Start))
		})
	}
}
