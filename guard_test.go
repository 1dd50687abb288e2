package pglock_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestGuardHoldsOffTakeover: while a guarded transaction is open,
// nobody takes the lock over, even after the holder's heartbeats stopped
// landing for more than a lease; the waiter gets the lock only once the
// transaction has ended, and the transaction's writes commit.
func TestGuardHoldsOffTakeover(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease, freq = 2 * time.Second, 200 * time.Millisecond
	db := openDB(t)
	ledger := newLedger(t, db)
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	waiter := sameTable(t, db, table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))

	l, err := c.Acquire("guarded")
	require.NoError(t, err)

	type result struct {
		l  *pglock.Lock
		at time.Time
	}
	got := make(chan result, 1)
	go func() {
		wl, err := waiter.Acquire("guarded")
		if err != nil {
			t.Errorf("waiter: %v", err)
			close(got)
			return
		}
		got <- result{wl, time.Now()}
	}()
	// Let the waiter see the lock held first, so that its lease of
	// silence runs while the transaction is open.
	for waiter.Stats().Waits == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx))
	_, err = tx.Exec(`INSERT INTO ` + ledger + ` (who) VALUES ('holder')`)
	require.NoError(t, err)

	// The heartbeat skips the guarded row, so after a lease the holder
	// counts the lock lost, and the waiter may try to take it over.
	waitClosed(t, l.Done(), 30*lease, "Done while guarded for longer than a lease")
	select {
	case r := <-got:
		t.Fatalf("waiter acquired the lock while a guarded transaction was open (rvn %d)", r.l.RecordVersionNumber())
	case <-time.After(lease):
	}
	committed := time.Now()
	require.NoError(t, tx.Commit())
	var r result
	select {
	case r = <-got:
	case <-time.After(30 * lease):
		t.Fatal("waiter did not acquire the lock after the guarded transaction ended")
	}
	require.NotNil(t, r.l)
	require.True(t, r.at.After(committed), "waiter acquired before the guarded transaction ended")
	t.Logf("waiter acquired %v after the guarded transaction committed", r.at.Sub(committed))
	require.Equal(t, 1, ledgerCount(t, db, ledger, "holder"))
	require.NoError(t, waiter.Release(r.l))
}

// TestGuardRefusesAfterTakeover: Guard checks the row in the database,
// not only the lock's own state: a lock stolen a moment ago, before any
// heartbeat could notice, is refused, and the caller's writes roll back.
func TestGuardRefusesAfterTakeover(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	ledger := newLedger(t, db)
	// No background heartbeat: only Guard can notice the steal.
	c, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("stolen")
	require.NoError(t, err)

	tx, err := db.Begin()
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx), "guard on a held lock")
	_, err = tx.Exec(`INSERT INTO ` + ledger + ` (who) VALUES ('before')`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	stealRow(t, db, table, "stolen")
	require.NoError(t, l.Err(), "the lock cannot know of the steal yet")

	tx, err = db.Begin()
	require.NoError(t, err)
	_, err = tx.Exec(`INSERT INTO ` + ledger + ` (who) VALUES ('after')`)
	require.NoError(t, err)
	err = l.Guard(bg, tx)
	require.ErrorIs(t, err, pglock.ErrLockAlreadyReleased)
	var other *pglock.OtherError
	require.ErrorAs(t, err, &other, "want an OtherError, got %T", err)
	require.NoError(t, tx.Rollback())
	require.True(t, isClosed(l.Done()), "Guard's discovery closes Done")
	require.Equal(t, 1, ledgerCount(t, db, ledger, "before"))
	require.Equal(t, 0, ledgerCount(t, db, ledger, "after"), "a write after the steal was committed")

	// Later calls are refused at once.
	tx, err = db.Begin()
	require.NoError(t, err)
	require.ErrorIs(t, l.Guard(bg, tx), pglock.ErrLockAlreadyReleased)
	require.NoError(t, tx.Rollback())
}

func TestGuardRefusesUnheldLock(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(5*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	l, err := c.Acquire("released")
	require.NoError(t, err)
	require.NoError(t, c.Release(l))
	tx, err := db.Begin()
	require.NoError(t, err)
	defer func() { _ = tx.Rollback() }()
	require.ErrorIs(t, l.Guard(bg, tx), pglock.ErrLockAlreadyReleased)

	_, err = c.Acquire("read", pglock.WithData([]byte("x")), pglock.KeepOnRelease())
	require.NoError(t, err)
	read, err := c.Get("read")
	require.NoError(t, err)
	require.ErrorIs(t, read.Guard(bg, tx), pglock.ErrLockAlreadyReleased, "a lock read with Get is not held")

	var nilLock *pglock.Lock
	require.ErrorIs(t, nilLock.Guard(bg, tx), pglock.ErrLockAlreadyReleased)
	held, err := c.Acquire("held")
	require.NoError(t, err)
	require.Error(t, held.Guard(bg, nil), "nil transaction")
	require.NoError(t, held.Err(), "a nil transaction does not end the lock")
	require.NoError(t, c.Release(held))
}

// TestGuardRefusesStaleSnapshot: in a REPEATABLE READ transaction whose
// snapshot predates the lock's last heartbeat, Guard cannot tell whether
// the lock is held; it refuses without ending the lock. Called first in a
// fresh transaction it works.
func TestGuardRefusesStaleSnapshot(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(0))
	l, err := c.Acquire("rr")
	require.NoError(t, err)
	tx, err := db.BeginTx(bg, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	require.NoError(t, err)
	var one int
	require.NoError(t, tx.QueryRow(`SELECT 1`).Scan(&one)) // takes the snapshot
	require.NoError(t, c.SendHeartbeat(bg, l))
	err = l.Guard(bg, tx)
	var fp *pglock.FailedPreconditionError
	require.ErrorAs(t, err, &fp, "want a FailedPreconditionError, got %v", err)
	require.NoError(t, tx.Rollback())
	require.NoError(t, l.Err(), "a stale snapshot must not end the lock")

	tx, err = db.BeginTx(bg, &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx))
	require.NoError(t, tx.Commit())
	require.NoError(t, c.Release(l))
}

// TestGuardBusyHolderKeepsLock: a holder that always has a guarded
// transaction open (several goroutines writing back to back) keeps its
// lock: the heartbeat, which skips a guarded row, waits for the row when
// skipping would let the lease run out.
func TestGuardBusyHolderKeepsLock(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease, freq = 2 * time.Second, 200 * time.Millisecond
	db := openDB(t)
	ledger := newLedger(t, db)
	c, _ := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := c.Acquire("busy")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 2*lease)
	defer cancel()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		writes int
	)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					continue
				}
				if err := l.Guard(ctx, tx); err != nil {
					_ = tx.Rollback()
					if l.Err() != nil {
						return
					}
					continue
				}
				_, err = tx.ExecContext(ctx, `INSERT INTO `+ledger+` (who) VALUES ('busy')`)
				time.Sleep(30 * time.Millisecond)
				if err == nil && tx.Commit() == nil {
					mu.Lock()
					writes++
					mu.Unlock()
				} else {
					_ = tx.Rollback()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d guarded writes in %v; heartbeats %d", writes, 2*lease, c.Stats().Heartbeats)
	require.NoError(t, l.Err(), "a busy holder lost its lock")
	require.Positive(t, writes)
	require.NoError(t, c.Release(l))
}
