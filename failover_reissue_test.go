package pglock_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestFailoverAsyncReissuedRVN: after an asynchronous failover, the new
// primary's RVN sequence hands out again values the old primary handed out
// in commits the standby never received. A holder whose lock was lost with
// those commits must not mistake a newer holder's row that got its RVN back
// for its own: neither its heartbeat, nor Guard, nor Release may match it.
//
// The standby is detached before the lost acquisition, so the loss is
// certain, and the sequence had handed out nothing before it: the old
// primary's first RVN is the new primary's first one too.
func TestFailoverAsyncReissuedRVN(t *testing.T) {
	fullSuiteOnly(t)
	pair := newFailoverPair(t, false)
	db := openFailoverDB(t, "postgres", pair)
	manual := []pglock.ClientOption{pglock.WithLeaseDuration(5 * time.Second), pglock.WithHeartbeatFrequency(0)}
	a, table := newClientTable(t, db, manual...)
	b := sameTable(t, db, table, manual...)
	closeClients(t, a, b)
	ledger := newLedger(t, db)
	require.NoError(t, pair.primary.CaughtUp(pair.standby))
	require.NoError(t, pair.standby.Detach())

	old, err := a.AcquireContext(testCtx(t), "reissued")
	require.NoError(t, err)
	pair.failover(t, 0)
	flushDeadConns(db)
	newer, err := b.AcquireContext(testCtx(t), "reissued")
	require.NoError(t, err)
	t.Logf("lost lock's RVN %d, the new holder's %d", old.RecordVersionNumber(), newer.RecordVersionNumber())
	require.Equal(t, old.RecordVersionNumber(), newer.RecordVersionNumber(), "the new primary did not re-issue the RVN")

	tx, err := db.BeginTx(testCtx(t), nil)
	require.NoError(t, err)
	err = old.Guard(testCtx(t), tx)
	require.NoError(t, tx.Rollback())
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "Guard of the lost lock passed on the new holder's row")
	require.Error(t, a.SendHeartbeat(testCtx(t), old), "the lost lock's heartbeat took the new holder's row")
	require.True(t, isClosed(old.Done()))
	require.Error(t, a.Release(old))

	require.NoError(t, b.SendHeartbeat(testCtx(t), newer), "the new holder lost its lock")
	owner, _, ok := rowOf(t, db, table, "reissued")
	require.True(t, ok)
	require.Equal(t, newer.Owner(), owner)
	tx, err = db.BeginTx(testCtx(t), nil)
	require.NoError(t, err)
	require.NoError(t, newer.Guard(testCtx(t), tx))
	_, err = tx.Exec(`INSERT INTO `+ledger+` (who) VALUES ($1)`, newer.Owner())
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	require.NoError(t, b.Release(newer))

	// The remedy docs/failover.md gives: advance the sequence past every
	// value the old primary could have handed out.
	mustExec(t, db, `SELECT setval($1::regclass, nextval($1::regclass) + 1000000000)`, quote(table+"_rvn"))
	again, err := a.AcquireContext(testCtx(t), "reissued")
	require.NoError(t, err)
	require.Greater(t, again.RecordVersionNumber(), int64(1000000000))
	require.NoError(t, a.Release(again))
}

// flushDeadConns drops db's idle connections to the killed primary: a
// statement on one fails with an outcome a client must treat as unknown,
// which is not what the test is about.
func flushDeadConns(db *sql.DB) {
	db.SetMaxIdleConns(0)
	db.SetMaxIdleConns(2)
}
