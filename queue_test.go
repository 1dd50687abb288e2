package pglock_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
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
// they take it in that order: as they are, and after every connection of
// the waiters (pools and LISTEN sessions) was terminated while they
// waited, which they survive without losing their places.
func TestFairQueueOrderAcrossClients(t *testing.T) {
	t.Parallel()
	for _, kill := range []bool{false, true} {
		t.Run(fmt.Sprintf("killed=%v", kill), func(t *testing.T) {
			t.Parallel()
			testFairOrder(t, kill)
		})
	}
}

func testFairOrder(t *testing.T, kill bool) {
	t.Helper()
	ctx := testCtx(t)
	holderDB := openDB(t)
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(3 * time.Second), pglock.WithHeartbeatFrequency(time.Second)}
	holder, table := newClientTable(t, holderDB, opts...)
	held, err := holder.AcquireContext(ctx, "fifo")
	require.NoError(t, err)
	const n = 6
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
		apps  []string
	)
	for i := range n {
		db, app := openApp(t)
		apps = append(apps, app)
		c := sameTable(t, db, table, opts...)
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
	if kill {
		var killed int
		require.NoError(t, holderDB.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = ANY($1)`, pq.StringArray(apps)).Scan(&killed))
		require.NotZero(t, killed)
		// Released at once: the waiters learn of it by a poll, or by
		// their next listener's catch-up, on new connections.
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

// TestElectionCandidatesLeadInCampaignOrder has five clients, each on a
// pool of its own, campaign one after the other while a leader holds on;
// each resigns once it leads, and they lead in the order they campaigned.
func TestElectionCandidatesLeadInCampaignOrder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := openDB(t)
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(3 * time.Second), pglock.WithHeartbeatFrequency(time.Second)}
	leader, table := newClientTable(t, db, opts...)
	first, err := leader.NewElection("order").Campaign(ctx, []byte("first"))
	require.NoError(t, err)
	const n = 5
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := range n {
		c := sameTable(t, openDB(t), table, opts...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ld, err := c.NewElection("order").Campaign(ctx, []byte(fmt.Sprint(i)))
			if !assertNoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			assertNoError(t, ld.Resign(ctx))
		}()
		require.Eventually(t, func() bool { return queueLen(t, db, table, "order") == i+1 },
			10*time.Second, time.Millisecond, "candidate %d joined the queue", i)
	}
	require.NoError(t, first.Resign(ctx))
	wg.Wait()
	require.Equal(t, []int{0, 1, 2, 3, 4}, order)
}

// TestFairQueueRejoinsAfterExpiry deletes a waiter's entry, as a waiter
// behind it does once the entry's RVN stayed the same for a place lease
// (the waiter's process was paused): its next look finds the entry gone
// and joins again, at the back, behind a waiter that came meanwhile.
func TestFairQueueRejoinsAfterExpiry(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	db := openDB(t)
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(2 * time.Second), pglock.WithHeartbeatFrequency(500 * time.Millisecond)}
	holder, table := newClientTable(t, db, opts...)
	held, err := holder.AcquireContext(ctx, "rejoin")
	require.NoError(t, err)
	a := sameTable(t, openDB(t), table, opts...)
	b := sameTable(t, openDB(t), table, opts...)
	q := quote(table + "_queue")
	gotA := acquireAsync(ctx, a, "rejoin")
	require.Eventually(t, func() bool { return queueLen(t, db, table, "rejoin") == 1 }, 10*time.Second, time.Millisecond)
	var first int64
	require.NoError(t, db.QueryRow(`SELECT ticket FROM `+q+` WHERE name = 'rejoin'`).Scan(&first))
	gotB := acquireAsync(ctx, b, "rejoin")
	require.Eventually(t, func() bool { return queueLen(t, db, table, "rejoin") == 2 }, 10*time.Second, time.Millisecond)
	mustExec(t, db, `DELETE FROM `+q+` WHERE name = 'rejoin' AND ticket = $1`, first)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+q+` WHERE name = 'rejoin' AND ticket > $1`, first).Scan(&n))
		return n == 2
	}, 10*time.Second, time.Millisecond, "a joined again after its next look")
	require.NoError(t, held.Close())
	rb := <-gotB
	require.NoError(t, rb.err)
	require.Empty(t, gotA, "a, at the back, waits behind b")
	require.NoError(t, rb.l.Close())
	ra := <-gotA
	require.NoError(t, ra.err)
	require.NoError(t, ra.l.Close())
}

// TestFairQueueLeavesOnceTheDatabaseIsBack ends a wait while its client
// cannot reach the database, so that the delete of its entry fails; the
// client deletes the entry once the database is back (retry), or when it
// closes first (close).
func TestFairQueueLeavesOnceTheDatabaseIsBack(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, how := range []string{"retry", "close"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			holderDB := openDB(t)
			holder, table := newClientTable(t, holderDB)
			t.Cleanup(func() { _ = holder.Close(context.Background()) })
			_, err := holder.AcquireContext(ctx, "litter")
			require.NoError(t, err)
			db, p, _ := proxied(t, "postgres")
			var failed atomic.Int64
			c := netClient(t, db, table, pglock.WithSlog(slog.New(countHandler{"cannot leave the lock's queue", &failed})))
			wctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				_, err := c.AcquireContext(wctx, "litter")
				errc <- err
			}()
			require.Eventually(t, func() bool { return queueLen(t, holderDB, table, "litter") == 1 },
				waitBound, time.Millisecond, "the waiter joined the queue")
			_, err = p.Partition()
			require.NoError(t, err)
			cancel()
			require.ErrorIs(t, <-errc, pglock.ErrNotAcquired)
			require.Eventually(t, func() bool { return failed.Load() > 0 }, waitBound, 10*time.Millisecond,
				"the delete of the entry failed")
			require.Equal(t, 1, queueLen(t, holderDB, table, "litter"), "the entry is still queued")
			require.NoError(t, p.Heal())
			healed := time.Now()
			if how == "close" {
				require.NoError(t, c.Close(ctx))
				require.Zero(t, queueLen(t, holderDB, table, "litter"), "the entry after Close")
				return
			}
			require.Eventually(t, func() bool { return queueLen(t, holderDB, table, "litter") == 0 },
				netLease, 10*time.Millisecond, "the entry was deleted once the database was back")
			t.Logf("entry deleted %v after the database was back (lease %v)", time.Since(healed).Round(time.Millisecond), netLease)
		})
	}
}
