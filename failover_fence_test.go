package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// fenceRowsPerTenure is how many Guard-fenced transactions a fencer commits
// in each tenure of a lock.
const fenceRowsPerTenure = 3

// newFenceTable creates the table fenced writes go to, with a bigserial id
// whose order checkFencing relies on.
func newFenceTable(t *testing.T, db *sql.DB) string {
	t.Helper()
	name := "fence_" + randomHex(6)
	mustExec(t, db, `CREATE TABLE `+quote(name)+` (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, rvn BIGINT NOT NULL, writer TEXT NOT NULL)`)
	return name
}

// fencers are goroutines that take turns on a few names through several
// clients: each tenure (one acquisition) commits fenceRowsPerTenure
// transactions, each fenced by Guard, inserting (name, rvn, writer) into
// the fence table, where writer names the tenure. They remember how many
// rows each tenure committed, as the clients saw it.
type fencers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	rows   map[string]int // committed rows by writer, as the clients saw them
}

// startFencers starts perClient fencers on each client, on names, writing
// through db into fence; they are stopped when t ends at the latest.
func startFencers(t *testing.T, db *sql.DB, clients []*pglock.Client, perClient int, names []string, fence string) *fencers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fencers{cancel: cancel, rows: map[string]int{}}
	t.Cleanup(func() { f.stop() })
	for i, c := range clients {
		for j := range perClient {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.run(ctx, db, c, fmt.Sprintf("fencer-%d-%d", i, j), names, fence)
			}()
		}
	}
	return f
}

// run is one fencer's loop, until ctx ends.
func (f *fencers) run(ctx context.Context, db *sql.DB, c *pglock.Client, id string, names []string, fence string) {
	for n := 0; ctx.Err() == nil; n++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, err := c.AcquireContext(actx, names[rand.IntN(len(names))], pglock.WithCustomHeartbeatContext(context.Background()))
		cancel()
		if err != nil {
			time.Sleep(10 * time.Millisecond) // no server accepts writes, or ctx ended
			continue
		}
		writer := fmt.Sprintf("%s/%d", id, n)
		for range fenceRowsPerTenure {
			if fencedInsert(ctx, db, l, fence, writer) != nil {
				break
			}
			f.mu.Lock()
			f.rows[writer]++
			f.mu.Unlock()
		}
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.ReleaseContext(rctx, l) // fails when the lock was lost meanwhile
		cancel()
	}
}

// fencedInsert commits one transaction fenced by l's Guard that inserts a
// row for writer into fence.
func fencedInsert(ctx context.Context, db *sql.DB, l *pglock.Lock, fence, writer string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := l.Guard(ctx, tx); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO `+quote(fence)+` (name, rvn, writer) VALUES ($1, $2, $3)`,
		l.Name(), l.RecordVersionNumber(), writer)
	if err != nil {
		return err
	}
	return tx.Commit()
}

// stop stops the fencers and returns the rows each writer committed, as
// the clients saw them.
func (f *fencers) stop() map[string]int {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows
}

// checkFencing fails t if, in the fence table on the server db reaches,
// the fenced writes of two tenures of one name interleave; it returns the
// rows found by writer.
//
// The oracle: order each name's rows by id; every writer's rows must then
// form one unbroken run. A tenure's fenced transactions hold its row FOR
// SHARE at its RVN and owner until they commit, so the next tenure's
// acquire (an update or a delete of that row, or an insert after the
// release deleted it) commits only after them, and its own fenced
// transactions draw their ids later still. Ids come from one sequence, so
// they grow in the order they are drawn, also across the failover: the
// sequence's WAL record for an id precedes the commit that used it, so the
// new primary's sequence resumes past every id of a row it has; rows lost
// with the old primary are simply absent. Rows of two tenures interleave
// only if both passed Guard at once: two holders of one name.
func checkFencing(t *testing.T, db *sql.DB, fence string) map[string]int {
	t.Helper()
	rows, err := db.QueryContext(testCtx(t), `SELECT name, writer FROM `+quote(fence)+` ORDER BY name, id`)
	require.NoError(t, err)
	defer rows.Close()
	found := map[string]int{}
	var name, prev string
	ended := map[string]bool{} // writers whose run ended, for the current name
	for rows.Next() {
		var n, writer string
		require.NoError(t, rows.Scan(&n, &writer))
		if n != name {
			name, prev, ended = n, "", map[string]bool{}
		}
		if writer != prev {
			require.False(t, ended[writer], "%s: fenced writes of %s resume after %s's: two holders at once", name, writer, prev)
			ended[prev] = true
			prev = writer
		}
		found[writer]++
	}
	require.NoError(t, rows.Err())
	return found
}
