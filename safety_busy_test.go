package pglock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestSafetyGuardBusyHolder: a holder that always has a guarded
// transaction open (several goroutines writing back to back) keeps its
// lock: the heartbeat, which skips a guarded row, waits for the row when
// skipping would let the lease run out.
func TestSafetyGuardBusyHolder(t *testing.T) {
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
