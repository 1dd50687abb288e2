package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestOriginalTableWorksWithEveryOperation: a table and sequence made by the
// original library's DDL, verbatim, work with every operation, including
// rows the original's clients left behind.
func TestOriginalTableWorksWithEveryOperation(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	table := originalTable(t, db)
	const lease = time.Second
	opts := []pglock.ClientOption{pglock.WithCustomTable(table), pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(100 * time.Millisecond)}
	c, err := pglock.New(db, append(opts, pglock.WithOwner("new-client"))...)
	require.NoError(t, err)
	other, err := pglock.New(db, opts...)
	require.NoError(t, err)
	silent := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))

	require.NoError(t, c.TryCreateTable(), "TryCreateTable leaves the original's table alone")
	require.Error(t, c.CreateTable(), "CreateTable refuses the existing table")

	// Acquire, heartbeat, read, contend, release.
	l, err := c.Acquire("job", pglock.WithData([]byte("payload")))
	require.NoError(t, err)
	rvn := l.RecordVersionNumber()
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.Eventually(t, func() bool { return l.RecordVersionNumber() > rvn+1 }, waitBound, 10*time.Millisecond, "background heartbeat")
	got, err := other.Get("job")
	require.NoError(t, err)
	assert.Equal(t, "new-client", got.Owner())
	got, err = other.GetContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(got.Data()))
	data, err := other.GetData("job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))
	data, err = other.GetDataContext(bg, "job")
	require.NoError(t, err)
	assert.Equal(t, "payload", string(data))
	_, err = other.Acquire("job", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx))
	require.NoError(t, tx.Rollback())

	waited := make(chan *pglock.Lock, 1)
	go func() {
		l, err := other.AcquireContext(testCtx(t), "job")
		assert.NoError(t, err)
		waited <- l
	}()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, c.Release(l))
	l2 := <-waited
	require.NotNil(t, l2)
	require.NoError(t, other.ReleaseContext(bg, l2))
	_, err = c.Get("job")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)

	// KeepOnRelease, ReplaceData, GetAllLocks, Do.
	l, err = c.Acquire("kept", pglock.WithData([]byte("one")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, l.Close())
	l, err = other.Acquire("kept", pglock.FailIfLocked(), pglock.WithData([]byte("two")), pglock.ReplaceData())
	require.NoError(t, err)
	assert.Equal(t, "two", string(l.Data()))
	require.NoError(t, l.Close())
	err = c.Do(bg, "do", func(ctx context.Context, l *pglock.Lock) error {
		all, err := other.GetAllLocks()
		require.NoError(t, err)
		require.Len(t, all, 1, "the kept row went with the plain release; only Do's lock")
		assert.Equal(t, "do", all[0].Name())
		all, err = other.GetAllLocksContext(ctx)
		require.NoError(t, err)
		assert.Len(t, all, 1)
		return nil
	})
	require.NoError(t, err)

	// Rows written by original clients: held, kept, and abandoned.
	mustExec(t, db, `INSERT INTO `+table+` VALUES ('orig-kept', NULL, 'old data', 'pglock-1')`)
	mustExec(t, db, `INSERT INTO `+table+` VALUES ('orig-crashed', nextval('`+table+`_rvn'), NULL, 'pglock-2')`)
	all, err := c.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, all, 2)
	assert.Equal(t, "pglock-2", all[0].Owner())
	l, err = c.Acquire("orig-kept", pglock.FailIfLocked())
	require.NoError(t, err, "a row the original kept is free at once")
	assert.Equal(t, "old data", string(l.Data()))
	require.NoError(t, l.Close())
	start := time.Now()
	l, err = silent.AcquireContext(testCtx(t), "orig-crashed")
	require.NoError(t, err, "an abandoned row is taken over after a lease")
	assert.GreaterOrEqual(t, time.Since(start), lease)
	<-l.Done() // no heartbeat: lost a lease later
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.NoError(t, silent.Release(l), "nobody took it over: the row is cleaned up")

	// SendHeartbeat and Release of a lock lost on this table.
	l, err = silent.Acquire("lost")
	require.NoError(t, err)
	stealRow(t, db, table, "lost")
	require.ErrorIs(t, silent.SendHeartbeat(bg, l), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, silent.Release(l), pglock.ErrLockAlreadyReleased)

	require.NoError(t, c.DropTable())
	assert.False(t, tableExists(t, db, "", table, "r"))
	assert.False(t, tableExists(t, db, "", table+"_rvn", "S"))
}

// TestRollingUpgradeNeverTwoHolders: clients of the original library (played
// with raw SQL of its algorithm, see origClient) and of this one share the
// original's table and never hold one name at once, whichever holds and
// whichever waits, and whichever goes silent.
func TestRollingUpgradeNeverTwoHolders(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	db := openDB(t)
	table := originalTable(t, db)
	const (
		lease = 2 * time.Second
		freq  = 250 * time.Millisecond
	)
	ours := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	orig := &origClient{db: db, table: table, owner: "pglock-42", lease: lease}
	ctx := testCtx(t)

	// inside counts holders of the name, as each holder sees itself.
	var inside atomic.Int64
	enter := func(who string) {
		if n := inside.Add(1); n != 1 {
			t.Errorf("%s entered while %d others held the lock", who, n-1)
		}
	}
	leave := func() { inside.Add(-1) }

	t.Run("original holds, ours waits", func(t *testing.T) {
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		enter("original")
		got := make(chan *pglock.Lock, 1)
		go func() {
			l, err := ours.AcquireContext(ctx, "n")
			assert.NoError(t, err)
			enter("ours")
			got <- l
		}()
		hctx, stop := context.WithTimeout(ctx, lease+lease/2)
		rvn, held := orig.heartbeatEvery(hctx, "n", rvn, freq)
		stop()
		require.True(t, held, "the heartbeating original was not taken over")
		leave()
		ok, err := orig.release(ctx, "n", rvn, false)
		require.NoError(t, err)
		require.True(t, ok)
		l := <-got
		leave()
		require.NoError(t, l.Close())
	})

	t.Run("ours holds, original waits", func(t *testing.T) {
		l, err := ours.AcquireContext(ctx, "n")
		require.NoError(t, err)
		enter("ours")
		got := make(chan int64, 1)
		go func() {
			rvn, err := orig.acquire(ctx, "n")
			assert.NoError(t, err)
			enter("original")
			got <- rvn
		}()
		time.Sleep(lease + lease/2)
		require.False(t, l.IsReleased(), "our heartbeating lock was not taken over")
		leave()
		require.NoError(t, l.Close())
		rvn := <-got
		leave()
		ok, err := orig.release(ctx, "n", rvn, false)
		require.NoError(t, err)
		require.True(t, ok)
	})

	t.Run("original goes silent, ours takes over", func(t *testing.T) {
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		enter("original")
		leave() // it crashes: no heartbeat, no release
		start := time.Now()
		l, err := ours.AcquireContext(ctx, "n")
		require.NoError(t, err)
		enter("ours")
		assert.GreaterOrEqual(t, time.Since(start), lease)
		_, held, err := orig.heartbeat(ctx, "n", rvn)
		require.NoError(t, err)
		assert.False(t, held, "the original finds its lock lost")
		leave()
		require.NoError(t, l.Close())
	})

	t.Run("ours goes silent, original takes over", func(t *testing.T) {
		hctx, stopHeartbeat := context.WithCancel(ctx)
		l, err := ours.AcquireContext(ctx, "n", pglock.WithCustomHeartbeatContext(hctx))
		require.NoError(t, err)
		enter("ours")
		left := make(chan struct{})
		go func() {
			<-l.Done()
			leave()
			close(left)
		}()
		stopHeartbeat()
		rvn, err := orig.acquire(ctx, "n")
		require.NoError(t, err)
		// Our lock ends a lease after its last heartbeat began, before
		// the original, which waited a lease after seeing that RVN, can
		// take it; allow for the timer's scheduling.
		select {
		case <-left:
		case <-time.After(200 * time.Millisecond):
			t.Error("the original took over a lock our client still held")
			<-left
		}
		enter("original")
		require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
		leave()
		ok, err := orig.release(ctx, "n", rvn, true)
		require.NoError(t, err)
		require.True(t, ok)
		l, err = ours.Acquire("n", pglock.FailIfLocked())
		require.NoError(t, err, "a row the original kept is free at once")
		require.NoError(t, l.Close())
	})
}

// TestOriginalClientWithoutNotifications: clients of the original library
// never notify and time out waits by sleeping a lease. Emulated with their
// raw SQL (origClient) on the same table: a waiter of this library picks up
// their release by polling, never takes their lock while they heartbeat, and
// they never take ours while we heartbeat.
func TestOriginalClientWithoutNotifications(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease = time.Second
	table, db := newTable(t)
	q := pq.QuoteIdentifier(table)
	orig := &origClient{db: db, table: table, owner: "old", lease: lease}
	// oldAcquire is one try of the original's acquire over the RVN it saw.
	oldAcquire := func(name string, seen int64) bool {
		acquired, _, err := orig.tryAcquire(bg, name, seen, nil)
		require.NoError(t, err)
		return acquired
	}

	t.Run("old holder, new waiter", func(t *testing.T) {
		waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(0))
		undisturbed(t, func(name string) bool { return oldHolderNewWaiter(t, orig, waiter, name) })
	})

	t.Run("new holder, old waiter", func(t *testing.T) {
		holder := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/5))
		undisturbed(t, func(name string) bool {
			l, err := holder.Acquire(name)
			require.NoError(t, err)
			for range 2 { // the original waits a lease and tries the RVN it saw
				var seen int64
				require.NoError(t, db.QueryRow(`SELECT record_version_number FROM `+q+` WHERE name = $1`, name).Scan(&seen))
				time.Sleep(lease)
				if oldAcquire(name, seen) {
					// Only legitimate when no heartbeat landed for a lease (a
					// loaded machine); the holder must then know it lost it.
					require.True(t, l.IsReleased(), "old client took a live lock")
					return false
				}
			}
			require.NoError(t, holder.Release(l))
			require.True(t, oldAcquire(name, 0))
			return true
		})
	})
}

// undisturbedTries is how many times undisturbed runs a scenario whose
// clients missed their leases.
const undisturbedTries = 3

// undisturbed runs scenario, on a name of its own each time, until a run
// reports that no client missed its lease: a takeover after a lease of
// silence is correct, but leaves the rest of the scenario unchecked. It
// fails the test when no run went undisturbed.
func undisturbed(t *testing.T, scenario func(name string) bool) {
	t.Helper()
	for i := range undisturbedTries {
		if scenario(fmt.Sprintf("n%d-%s", i, randomHex(4))) {
			return
		}
		t.Logf("run %d: a client missed its lease (a loaded machine); the takeover was correct, running again", i)
	}
	t.Fatalf("in %d runs, a client missed its lease every time: the scenario could not be checked", undisturbedTries)
}

// oldHolderNewWaiter has the emulated original hold name and heartbeat for
// two leases while waiter waits, then release it without a notification;
// the waiter must pick the release up by polling. It reports false when
// the original missed its lease and the waiter took the lock over.
func oldHolderNewWaiter(t *testing.T, orig *origClient, waiter *pglock.Client, name string) bool {
	t.Helper()
	lease := orig.lease
	acquired, rvn, err := orig.tryAcquire(bg, name, 0, nil)
	require.NoError(t, err)
	require.True(t, acquired)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	steals := waiter.Stats().Steals
	got := acquireAsync(ctx, waiter, name)
	deadline := time.Now().Add(2 * lease)
	lastBeat := time.Now()
	for time.Now().Before(deadline) { // heartbeats for two leases
		time.Sleep(lease / 5)
		select {
		case r := <-got:
			// Only legitimate if the old client was silent for a lease.
			require.NoError(t, r.err)
			require.GreaterOrEqual(t, r.at.Sub(lastBeat), lease, "took the old client's live lock")
			require.NoError(t, waiter.Release(r.l))
			return false
		default:
		}
		beat := time.Now()
		next, ok, err := orig.heartbeat(bg, name, rvn)
		require.NoError(t, err)
		if !ok { // taken over: only legitimate after a lease of silence
			r := <-got
			require.NoError(t, r.err)
			require.GreaterOrEqual(t, r.at.Sub(lastBeat), lease, "took the old client's live lock")
			require.NoError(t, waiter.Release(r.l))
			return false
		}
		rvn, lastBeat = next, beat
	}
	notes := waiter.Stats().Notifications
	released := time.Now()
	_, err = orig.release(bg, name, rvn, false) // no NOTIFY
	require.NoError(t, err)
	r := <-got
	require.NoError(t, r.err)
	require.Less(t, r.at.Sub(released), lease, "picked up by polling, not by waiting out a lease")
	require.Equal(t, notes, waiter.Stats().Notifications, "the old client sent no notification")
	require.Equal(t, steals, waiter.Stats().Steals, "the waiter took nothing over")
	require.NoError(t, waiter.Release(r.l))
	return true
}

// originalTable creates a fresh table and its sequence exactly as the
// original library's CreateTable does, dropped when t ends, and returns the
// table's name.
func originalTable(t *testing.T, db *sql.DB) string {
	t.Helper()
	table := "orig_" + randomHex(6)
	mustExec(t, db, `CREATE TABLE `+table+` (name CHARACTER VARYING(255) PRIMARY KEY, record_version_number BIGINT, data BYTEA, owner CHARACTER VARYING(255))`)
	mustExec(t, db, `CREATE SEQUENCE `+table+`_rvn CYCLE OWNED BY `+table+`.record_version_number`)
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE IF EXISTS ` + table) })
	return table
}

// origClient plays a client of the original cirello.io/pglock with raw
// SQL of its algorithm, so that rolling upgrades can be tested without
// importing the original module (its module path is this one's).
//   - acquire: nextval, then in a SERIALIZABLE transaction an upsert that
//     takes the row only when its RVN is NULL or still the RVN seen on the
//     previous try, then a read of the row FOR UPDATE; held when the row
//     carries the new RVN. A waiter sleeps one lease between tries.
//   - heartbeat: UPDATE to a fresh RVN WHERE name and RVN match.
//   - release: DELETE WHERE name and RVN match (or RVN set NULL to keep).
type origClient struct {
	db    *sql.DB
	table string // spliced raw into the SQL, as the original did
	owner string
	lease time.Duration
}

func (o *origClient) nextRVN(ctx context.Context) (int64, error) {
	var rvn int64
	err := o.db.QueryRowContext(ctx, `SELECT nextval('`+o.table+`_rvn')`).Scan(&rvn)
	return rvn, err
}

// tryAcquire is the original's storeAcquire, retried on serialization
// failures. seen is the RVN the previous try saw (0 at first).
func (o *origClient) tryAcquire(ctx context.Context, name string, seen int64, data []byte) (acquired bool, actual int64, err error) {
	for {
		acquired, actual, err = o.storeAcquire(ctx, name, seen, data)
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "40001" {
			continue
		}
		return acquired, actual, err
	}
}

func (o *origClient) storeAcquire(ctx context.Context, name string, seen int64, data []byte) (bool, int64, error) {
	rvn, err := o.nextRVN(ctx)
	if err != nil {
		return false, 0, err
	}
	tx, err := o.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		return false, 0, err
	}
	defer func() { _ = tx.Rollback() }()
	_, err = tx.ExecContext(ctx, `
		INSERT INTO `+o.table+`
			("name", "record_version_number", "data", "owner")
		VALUES
			($1, $2, $3, $6)
		ON CONFLICT ("name") DO UPDATE
		SET
			"record_version_number" = $2,
			"data" = CASE
				WHEN $5 THEN $3
				ELSE `+o.table+`."data"
			END,
			"owner" = $6
		WHERE
			`+o.table+`."record_version_number" IS NULL
			OR `+o.table+`."record_version_number" = $4
	`, name, rvn, data, seen, false, o.owner)
	if err != nil {
		return false, 0, err
	}
	var actual sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT "record_version_number" FROM `+o.table+` WHERE name = $1 FOR UPDATE`, name).Scan(&actual)
	if err != nil {
		return false, 0, err
	}
	if actual.Int64 != rvn {
		return false, actual.Int64, nil
	}
	return true, rvn, tx.Commit()
}

// acquire waits as the original did: try, sleep a lease, try again with the
// RVN seen.
func (o *origClient) acquire(ctx context.Context, name string) (int64, error) {
	var seen int64
	for {
		acquired, actual, err := o.tryAcquire(ctx, name, seen, nil)
		if err != nil {
			return 0, err
		}
		if acquired {
			return actual, nil
		}
		seen = actual
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(o.lease):
		}
	}
}

// heartbeat is the original's storeHeartbeat: ok is false when the row no
// longer carries rvn (the lock was lost).
func (o *origClient) heartbeat(ctx context.Context, name string, rvn int64) (newRVN int64, ok bool, err error) {
	newRVN, err = o.nextRVN(ctx)
	if err != nil {
		return 0, false, err
	}
	res, err := o.db.ExecContext(ctx, `UPDATE `+o.table+` SET "record_version_number" = $3 WHERE name = $1 AND "record_version_number" = $2`, name, rvn, newRVN)
	if err != nil {
		return 0, false, err
	}
	n, err := res.RowsAffected()
	return newRVN, n == 1, err
}

// heartbeatEvery runs heartbeat at freq until ctx ends or the lock is lost;
// it returns the last RVN and whether the lock was still held.
func (o *origClient) heartbeatEvery(ctx context.Context, name string, rvn int64, freq time.Duration) (int64, bool) {
	t := time.NewTicker(freq)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rvn, true
		case <-t.C:
		}
		newRVN, ok, err := o.heartbeat(context.Background(), name, rvn)
		switch {
		case err != nil:
			continue // as the original: try again next tick
		case !ok:
			return rvn, false
		}
		rvn = newRVN
	}
}

// release is the original's storeRelease: ok is false when the lock was
// already lost.
func (o *origClient) release(ctx context.Context, name string, rvn int64, keep bool) (ok bool, err error) {
	query := `DELETE FROM ` + o.table + ` WHERE name = $1 AND record_version_number = $2`
	if keep {
		query = `UPDATE ` + o.table + ` SET record_version_number = NULL WHERE name = $1 AND record_version_number = $2`
	}
	res, err := o.db.ExecContext(ctx, query, name, rvn)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}
