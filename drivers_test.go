package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestScenariosUnderEachDriver runs the core scenarios under both drivers.
func TestScenariosUnderEachDriver(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	scenarios := []struct {
		name string
		run  func(t *testing.T, db *sql.DB)
	}{
		{"AcquireRelease", scenarioAcquireRelease},
		{"FailIfLocked", scenarioFailIfLocked},
		{"KeepOnReleaseData", scenarioKeepOnReleaseData},
		{"Heartbeat", scenarioHeartbeat},
		{"GetAllLocks", scenarioGetAllLocks},
		{"ReleaseWakesWaiter", scenarioReleaseWakesWaiter},
		{"StolenLock", scenarioStolenLock},
		{"GuardInTx", scenarioGuardInTx},
		{"Contention", scenarioContention},
	}
	for _, driverName := range append(driverNames, pgxConnector) {
		t.Run(driverName, func(t *testing.T) {
			t.Parallel()
			db := openDriver(t, driverName)
			for _, s := range scenarios {
				t.Run(s.name, func(t *testing.T) {
					t.Parallel()
					s.run(t, db)
				})
			}
		})
	}
}

func scenarioAcquireRelease(t *testing.T, db *sql.DB) {
	c := newClient(t, db, shortLease...)
	l, err := c.Acquire("a")
	require.NoError(t, err)
	require.False(t, l.IsReleased())
	require.NotZero(t, l.RecordVersionNumber())
	got, err := c.Get("a")
	require.NoError(t, err)
	require.Equal(t, l.Owner(), got.Owner())
	require.NoError(t, l.Close())
	require.True(t, l.IsReleased())
	_, err = c.Get("a")
	require.ErrorIs(t, err, pglock.ErrLockNotFound)
	var notExist *pglock.NotExistError
	require.ErrorAs(t, err, &notExist)
	require.ErrorIs(t, c.Release(l), pglock.ErrLockAlreadyReleased)
}

func scenarioFailIfLocked(t *testing.T, db *sql.DB) {
	c1, table := newClientTable(t, db, shortLease...)
	c2 := sameTable(t, db, table, shortLease...)
	l1, err := c1.Acquire("a")
	require.NoError(t, err)
	defer l1.Close()
	l2, err := c2.Acquire("a", pglock.FailIfLocked())
	require.ErrorIs(t, err, pglock.ErrNotAcquired)
	require.NotNil(t, l2, "the original returns the unheld lock with ErrNotAcquired")
	require.True(t, l2.IsReleased())
}

func scenarioKeepOnReleaseData(t *testing.T, db *sql.DB) {
	c := newClient(t, db, shortLease...)
	l, err := c.Acquire("a", pglock.WithData([]byte("first")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.NoError(t, l.Close())
	data, err := c.GetData("a")
	require.NoError(t, err)
	require.Equal(t, []byte("first"), data)

	// A kept row keeps its data unless ReplaceData is given.
	l, err = c.Acquire("a", pglock.WithData([]byte("ignored")), pglock.KeepOnRelease())
	require.NoError(t, err)
	require.Equal(t, []byte("first"), l.Data())
	require.NoError(t, l.Close())
	l, err = c.Acquire("a", pglock.WithData([]byte("second")), pglock.ReplaceData())
	require.NoError(t, err)
	require.Equal(t, []byte("second"), l.Data())
	require.NoError(t, l.Close())
	_, err = c.GetData("a")
	require.ErrorIs(t, err, pglock.ErrLockNotFound, "released without KeepOnRelease: the row is gone")
}

func scenarioHeartbeat(t *testing.T, db *sql.DB) {
	c := newClient(t, db, shortLease...)
	l, err := c.Acquire("a")
	require.NoError(t, err)
	defer l.Close()
	first := l.RecordVersionNumber()
	require.Eventually(t, func() bool { return l.RecordVersionNumber() != first },
		10*time.Second, 10*time.Millisecond, "the background heartbeat bumps the RVN")
	before := l.RecordVersionNumber()
	require.NoError(t, c.SendHeartbeat(bg, l))
	require.NotEqual(t, before, l.RecordVersionNumber())
	got, err := c.Get("a")
	require.NoError(t, err)
	require.NotZero(t, got.RecordVersionNumber())
	require.False(t, l.IsReleased())
}

func scenarioGetAllLocks(t *testing.T, db *sql.DB) {
	c := newClient(t, db, shortLease...)
	for _, name := range []string{"b", "a"} {
		l, err := c.Acquire(name, pglock.WithData([]byte("data-"+name)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
	}
	locks, err := c.GetAllLocks()
	require.NoError(t, err)
	require.Len(t, locks, 2)
	for i, name := range []string{"a", "b"} {
		require.Equal(t, name, locks[i].Name())
		require.Equal(t, []byte("data-"+name), locks[i].Data())
		require.NotEmpty(t, locks[i].Owner())
	}
}

// scenarioReleaseWakesWaiter checks that a release reaches a waiter of another
// client through LISTEN/NOTIFY under either driver: the lease is far longer
// than the test's bound, and the waiter's client counts the notification.
func scenarioReleaseWakesWaiter(t *testing.T, db *sql.DB) {
	c1, table := newClientTable(t, db, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(time.Second))
	c2 := sameTable(t, db, table, pglock.WithLeaseDuration(time.Minute), pglock.WithHeartbeatFrequency(time.Second))
	held, err := c1.Acquire("held")
	require.NoError(t, err)
	l1, err := c1.Acquire("a")
	require.NoError(t, err)

	// A second waiter on "held" keeps c2's listener up after "a" is handed
	// over, so the notification of "a" is sure to be counted.
	ctx, cancel := context.WithCancel(bg)
	heldDone := make(chan error, 1)
	go func() {
		_, err := c2.AcquireContext(ctx, "held")
		heldDone <- err
	}()
	got := make(chan *pglock.Lock, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := c2.Acquire("a")
		if err != nil {
			errc <- err
			return
		}
		got <- l
	}()
	require.Eventually(t, func() bool { s := c2.Stats(); return s.Waits == 2 && s.Listening },
		10*time.Second, 5*time.Millisecond, "both wait, and the client listens for releases")
	require.NoError(t, l1.Close())
	select {
	case l2 := <-got:
		require.NoError(t, l2.Close())
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not woken by the release")
	}
	require.Eventually(t, func() bool { return c2.Stats().Notifications > 0 }, 10*time.Second, 5*time.Millisecond,
		"the release notification reaches the waiting client")
	cancel()
	require.ErrorIs(t, <-heldDone, pglock.ErrNotAcquired)
	require.NoError(t, held.Close())
}

func scenarioStolenLock(t *testing.T, db *sql.DB) {
	c, table := newClientTable(t, db, shortLease...)
	l, err := c.Acquire("a")
	require.NoError(t, err)
	// Someone else takes the row over: its RVN changes under us.
	stealRow(t, db, table, "a")
	select {
	case <-l.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the stolen lock was not detected")
	}
	require.ErrorIs(t, l.Err(), pglock.ErrLockAlreadyReleased)
	require.ErrorIs(t, l.Close(), pglock.ErrLockAlreadyReleased)
	got, err := c.Get("a")
	require.NoError(t, err)
	require.Equal(t, "thief", got.Owner(), "losing a lock must not touch the thief's row")
}

func scenarioGuardInTx(t *testing.T, db *sql.DB) {
	c, table := newClientTable(t, db, shortLease...)
	_, err := db.Exec(fmt.Sprintf(`CREATE TABLE %q (v int)`, table+"_guarded"))
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.Exec(fmt.Sprintf(`DROP TABLE %q`, table+"_guarded")) })

	l, err := c.Acquire("a")
	require.NoError(t, err)
	tx, err := db.BeginTx(bg, nil)
	require.NoError(t, err)
	require.NoError(t, l.Guard(bg, tx))
	_, err = tx.Exec(fmt.Sprintf(`INSERT INTO %q VALUES (1)`, table+"_guarded"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	// A thief (another owner) takes the row over. With the same owner, a
	// heartbeat whose outcome was unknown would rightly adopt the new RVN.
	stealRow(t, db, table, "a")
	tx, err = db.BeginTx(bg, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // rolled back on purpose; the error says nothing here
	require.ErrorIs(t, l.Guard(bg, tx), pglock.ErrLockAlreadyReleased)
	require.True(t, l.IsReleased())
}

// scenarioContention has 20 goroutines over 4 clients take one lock in turn and
// checks that no two ever hold it at once.
func scenarioContention(t *testing.T, db *sql.DB) {
	const clients, perClient, rounds = 4, 5, 2
	c0, table := newClientTable(t, db, shortLease...)
	var (
		inside, entries atomic.Int64
		wg              sync.WaitGroup
		failures        = make(chan error, clients*perClient)
	)
	all := make([]*pglock.Client, 0, clients)
	for i := range clients {
		c := c0
		if i > 0 {
			c = sameTable(t, db, table, shortLease...)
		}
		all = append(all, c)
		for range perClient {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					err := c.Do(bg, "contended", func(context.Context, *pglock.Lock) error {
						if n := inside.Add(1); n != 1 {
							return fmt.Errorf("%d holders at once", n)
						}
						entries.Add(1)
						time.Sleep(time.Millisecond)
						inside.Add(-1)
						return nil
					})
					if err != nil {
						failures <- err
						return
					}
				}
			}()
		}
	}
	// Stats is read all along, as a metrics scraper would (-race checks it).
	stopScrape := make(chan struct{})
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for {
			select {
			case <-stopScrape:
				return
			default:
				for _, c := range all {
					_ = c.Stats()
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	wg.Wait()
	close(stopScrape)
	<-scraped
	close(failures)
	for err := range failures {
		require.NoError(t, err)
	}
	require.Equal(t, int64(clients*perClient*rounds), entries.Load())
	var total pglock.Stats
	for _, c := range all {
		s := c.Stats()
		require.Equal(t, int64(perClient*rounds), s.Acquired)
		require.Equal(t, s.Acquired, s.Released)
		require.Zero(t, s.Held())
		require.Zero(t, s.Lost)
		require.LessOrEqual(t, s.Waits, s.Acquired)
		require.LessOrEqual(t, s.MaxWait, s.WaitTime)
		require.LessOrEqual(t, s.HandoffTime, s.WaitTime, "a handoff is the tail of a wait")
		require.LessOrEqual(t, s.MaxHandoff, s.MaxWait)
		require.LessOrEqual(t, s.Handoffs, s.Waits)
		total.Waits += s.Waits
		total.Handoffs += s.Handoffs
	}
	require.Positive(t, total.Waits, "%d goroutines on one lock: some waited", clients*perClient)
	t.Logf("waits %d, handoffs after a notification %d", total.Waits, total.Handoffs)
}
