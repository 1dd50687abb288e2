package pglock_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// landUnseen does what a heartbeat of l does when its commit
// succeeds but its answer is lost, and its read back fails: the row gets a
// new RVN (same owner) that the lock does not know.
func landUnseen(t *testing.T, db *sql.DB, table string, l *pglock.Lock) int64 {
	t.Helper()
	start := time.Now()
	var rvn int64
	err := db.QueryRow(`UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn')
		WHERE name = $1 AND record_version_number = $2 RETURNING record_version_number`,
		l.Name(), l.RecordVersionNumber()).Scan(&rvn)
	require.NoError(t, err)
	pglock.MarkUnsettled(l, start)
	return rvn
}

// TestSafetyUnsettledHeartbeat: a lock whose last heartbeat landed unseen is
// not taken for lost by whatever finds its row moved next.
func TestSafetyUnsettledHeartbeat(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	ledger := newLedger(t, db)

	l, err := c.Acquire("send")
	require.NoError(t, err)
	rvn := landUnseen(t, db, table, l)
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Equal(t, rvn, l.RecordVersionNumber())
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Greater(t, l.RecordVersionNumber(), rvn)

	l2, err := c.Acquire("guard")
	require.NoError(t, err)
	landUnseen(t, db, table, l2)
	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l2.Guard(bg, tx))
	_, err = tx.Exec(`INSERT INTO ` + ledger + ` (who) VALUES ('unsettled')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	l3, err := c.Acquire("release")
	require.NoError(t, err)
	landUnseen(t, db, table, l3)
	require.NoError(t, c.Release(l3))
	_, err = c.Get("release")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)

	// Moved by someone else: lost all the same.
	l4, err := c.Acquire("stolen")
	require.NoError(t, err)
	pglock.MarkUnsettled(l4, time.Now())
	stealRow(t, db, table, "stolen")
	require.ErrorIs(t, c.SendHeartbeat(bg, l4), pglock.ErrLockAlreadyReleased)
	require.True(t, isClosed(l4.Done()))

	require.NoError(t, c.Release(l))
	require.NoError(t, c.Release(l2))
}

// TestSafetyUnsettledBackground: the background heartbeat reads the row
// back too, and carries on.
func TestSafetyUnsettledBackground(t *testing.T) {
	t.Parallel()
	const lease, freq = 3 * time.Second, 100 * time.Millisecond
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := c.Acquire("background")
	require.NoError(t, err)
	// Move the row in a transaction: until it commits, heartbeats skip the
	// row, so none can land between the move and the mark.
	tx, err := db.Begin()
	require.NoError(t, err)
	start := time.Now()
	var moved int64
	err = tx.QueryRow(`UPDATE `+table+` SET record_version_number = nextval('`+table+`_rvn')
		WHERE name = $1 RETURNING record_version_number`, l.Name()).Scan(&moved)
	require.NoError(t, err)
	pglock.MarkUnsettled(l, start)
	require.NoError(t, tx.Commit())
	// Several heartbeats later the lock is held, past the moved RVN.
	deadline := time.Now().Add(lease)
	for l.RecordVersionNumber() <= moved && time.Now().Before(deadline) {
		time.Sleep(freq)
	}
	require.NoError(t, l.Err(), "lost after a heartbeat landed unseen")
	require.Greater(t, l.RecordVersionNumber(), moved)
	require.NoError(t, c.Release(l))
}
