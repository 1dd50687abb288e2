package pglock_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

func TestCoreSendHeartbeat(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	for range 3 {
		before := l.RecordVersionNumber()
		require.NoError(t, c.SendHeartbeat(bg, l))
		after := l.RecordVersionNumber()
		assert.NotEqual(t, before, after, "a heartbeat bumps the RVN")
		rvn, valid := rowRVN(t, db, table, "job")
		require.True(t, valid)
		assert.Equal(t, after, rvn, "the row carries the new RVN")
	}
	assert.False(t, l.IsReleased())

	stealRow(t, db, table, "job")
	err = c.SendHeartbeat(bg, l)
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased, "the RVN moved under the lock")
	assert.True(t, l.IsReleased(), "a failed heartbeat marks the lock released")
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed")
	}
	assert.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)

	// The row deleted under the lock is the same loss.
	l, err = c.Acquire("gone")
	require.NoError(t, err)
	mustExec(t, db, `DELETE FROM `+quote(table)+` WHERE name = 'gone'`)
	require.ErrorIs(t, c.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	assert.True(t, l.IsReleased())
}

func TestCoreBackgroundHeartbeat(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Second), pglock.WithHeartbeatFrequency(50*time.Millisecond))
	l, err := c.Acquire("job")
	require.NoError(t, err)
	first := l.RecordVersionNumber()
	require.Eventually(t, func() bool {
		rvn, _ := rowRVN(t, db, table, "job")
		return rvn != first && rvn == l.RecordVersionNumber()
	}, waitBound, 20*time.Millisecond, "the heartbeat bumps the row's RVN and the lock follows")

	// A heartbeat that finds the row taken over ends the lock.
	stealRow(t, db, table, "job")
	select {
	case <-l.Done():
	case <-time.After(waitBound):
		t.Fatal("the background heartbeat did not notice the loss")
	}
	assert.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	assert.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
}

// TestBatchHeartbeatAppliesRowsAfterCommit: a batch heartbeat whose commit
// fails (a deferred trigger raises a serialization failure once, at commit)
// must not keep the RVNs of the rolled-back transaction: its retry's RVNs
// are the lock's, and the lock is not lost.
func TestBatchHeartbeatAppliesRowsAfterCommit(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	l, err := c.Acquire("n")
	require.NoError(t, err)
	seq, fn := table+"_once", table+"_fail_once"
	mustExec(t, db, `CREATE SEQUENCE `+quote(seq))
	mustExec(t, db, `CREATE FUNCTION `+quote(fn)+`() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF nextval('`+seq+`') = 1 THEN
		RAISE EXCEPTION 'injected at commit' USING ERRCODE = '40001';
	END IF;
	RETURN NULL;
END $$`)
	defer mustExec(t, db, `DROP FUNCTION `+quote(fn)+`() CASCADE`)
	defer mustExec(t, db, `DROP SEQUENCE `+quote(seq))
	mustExec(t, db, `CREATE CONSTRAINT TRIGGER fail_once AFTER UPDATE ON `+quote(table)+`
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION `+quote(fn)+`()`)
	require.Eventually(t, func() bool {
		var n int64
		require.NoError(t, db.QueryRow(`SELECT last_value FROM `+quote(seq)).Scan(&n))
		return n >= 3 || l.IsReleased()
	}, waitBound, time.Millisecond, "heartbeats go on past the failed commit")
	rvn, valid := rowRVN(t, db, table, "n")
	assert.True(t, valid)
	assert.NoError(t, l.Err(), "the lock was lost while its row held RVN %d", rvn)
	assert.Equal(t, rvn, l.RecordVersionNumber(), "the lock knows its row's RVN")
	require.NoError(t, c.Release(l))
}
