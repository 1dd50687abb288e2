package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// heartbeatBatchSQL returns the text of the background heartbeat
// statement of a client on table, as the client sends it.
func heartbeatBatchSQL(t *testing.T, table string) string {
	t.Helper()
	db, cnt := countedDB(t)
	c := unsafeClient(t, db, table, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	var rec recorder
	cnt.SetObserver(rec.observe)
	l, err := c.Acquire("perf-plan-probe")
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

// TestPerfHeartbeatBatchPlan checks that the batched heartbeat finds its rows
// through the primary key: on a 10,000-row table, a batch of 1000 locks must
// not scan the whole table.
func TestPerfHeartbeatBatchPlan(t *testing.T) {
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
		text := explain(t, db, query, names, rvns, pq.QuoteIdentifier(table+"_rvn"))
		require.NotContains(t, text, "Seq Scan", "analyzed=%v\n%s", analyzed, text)
		require.Contains(t, text, "Index Scan using "+table+"_pkey", "analyzed=%v\n%s", analyzed, text)
	}
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
