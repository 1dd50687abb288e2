package pglock_test

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// queueLen counts the fair queue's entries of name.
func queueLen(t testing.TB, db *sql.DB, table, name string) int {
	t.Helper()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+quote(table+"_queue")+` WHERE name = $1`, name).Scan(&n))
	return n
}

// TestFairQueueOrderAcrossClients has six clients, each on a pool of its
// own, begin to wait for a held lock one after the other, and checks that
// they take it in that order.
func TestFairQueueOrderAcrossClients(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	holderDB := openDB(t)
	holder, table := newClientTable(t, holderDB, pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(time.Second))
	held, err := holder.AcquireContext(ctx, "fifo")
	require.NoError(t, err)
	const n = 6
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		c := sameTable(t, openDB(t), table, pglock.WithLeaseDuration(3*time.Second), pglock.WithHeartbeatFrequency(time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.AcquireContext(ctx, "fifo")
			if !assertNoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			assertNoError(t, l.Close())
		}()
		require.Eventually(t, func() bool { return queueLen(t, holderDB, table, "fifo") == i+1 },
			10*time.Second, time.Millisecond, "waiter %d joined the queue", i)
	}
	require.NoError(t, held.Close())
	wg.Wait()
	require.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
	require.Zero(t, queueLen(t, holderDB, table, "fifo"), "every waiter left the queue")
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestFairQueueDeadEntryExpires leaves an entry nobody keeps alive ahead
// of a waiter, as a waiter's process that died leaves it: the waiter takes
// the released lock once the entry's RVN stayed the same for a place
// lease (three tenths of a lease), not before, and deletes the entry.
func TestFairQueueDeadEntryExpires(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := openDB(t)
	const lease = 2 * time.Second
	holder, table := newClientTable(t, db, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/4))
	held, err := holder.AcquireContext(ctx, "dead")
	require.NoError(t, err)
	mustExec(t, db, `INSERT INTO `+quote(table+"_queue")+` (name, ticket, client, record_version_number)
		SELECT 'dead', nextval($1::regclass), 'gone', nextval($1::regclass)`, quote(table+"_rvn"))
	waiter := sameTable(t, openDB(t), table, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease/4))
	joined := time.Now()
	got := acquireAsync(ctx, waiter, "dead")
	require.Eventually(t, func() bool { return queueLen(t, db, table, "dead") == 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, held.Close())
	var r acquireResult
	select {
	case r = <-got:
	case <-time.After(2 * lease):
		t.Fatal("the waiter behind a dead entry never took the lock")
	}
	require.NoError(t, r.err)
	waited := time.Since(joined)
	require.GreaterOrEqual(t, waited, lease*3/10, "the dead entry held the waiter back for its place lease")
	require.Less(t, waited, lease, "the dead entry expired within a lease")
	require.Zero(t, queueLen(t, db, table, "dead"), "the dead entry and the waiter's own are gone")
	require.NoError(t, r.l.Close())
}

// TestFairQueueLeavesOnCancel checks that a waiter whose context ends
// takes its entry out of the queue.
func TestFairQueueLeavesOnCancel(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := openDB(t)
	holder, table := newClientTable(t, db)
	held, err := holder.AcquireContext(ctx, "cancel")
	require.NoError(t, err)
	defer held.Close()
	waiter := sameTable(t, openDB(t), table)
	wctx, cancel := context.WithCancel(ctx)
	got := acquireAsync(wctx, waiter, "cancel")
	require.Eventually(t, func() bool { return queueLen(t, db, table, "cancel") == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	r := <-got
	require.ErrorIs(t, r.err, pglock.ErrNotAcquired)
	require.Eventually(t, func() bool { return queueLen(t, db, table, "cancel") == 0 }, 10*time.Second, time.Millisecond,
		"the entry left with the wait")
}

// TestTableWithoutQueue runs waits on a table made by the original
// library, which has no queue: they race as before, and the client logs
// once how to add the queue. TryCreateTable then adds it.
func TestTableWithoutQueue(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := openDB(t)
	table := originalTable(t, db)
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	a := unsafeClient(t, db, table, pglock.WithSlog(logger))
	b := unsafeClient(t, db, table)
	for i := range 2 {
		held, err := b.AcquireContext(ctx, "race")
		require.NoError(t, err)
		got := acquireAsync(ctx, a, "race")
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, held.Close())
		r := <-got
		require.NoError(t, r.err, "wait %d", i)
		require.NoError(t, r.l.Close())
	}
	mu.Lock()
	logged := bytes.Count(buf.Bytes(), []byte("no fair queue"))
	mu.Unlock()
	require.Equal(t, 1, logged, "logged once: %s", buf.String())
	require.False(t, tableExists(t, db, "", table+"_queue", "r"))
	require.NoError(t, a.TryCreateTable())
	require.True(t, tableExists(t, db, "", table+"_queue", "r"), "TryCreateTable adds the queue")
	mustExec(t, db, `DROP TABLE `+quote(table+"_queue"))
}

// TestDropTableDropsQueue checks that DropTable removes the queue too.
func TestDropTableDropsQueue(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	c, table := newClientTable(t, db)
	require.True(t, tableExists(t, db, "", table+"_queue", "r"))
	require.NoError(t, c.DropTable())
	require.False(t, tableExists(t, db, "", table+"_queue", "r"))
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
