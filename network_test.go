package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/netfault"
)

// The network between a client and PostgreSQL fails in ways the database
// itself does not: flows dropped by a NAT or load balancer without a reset,
// peers that vanish, links that add latency. These tests put a
// fault-injecting TCP proxy (internal/netfault) between the client under
// test and the server, and run each scenario under lib/pq and pgx. Other
// clients reach the server directly.

// netDrivers are the drivers the network scenarios run under.
var netDrivers = []string{"postgres", "pgx"}

// pqConnector stands for a lib/pq pool made by sql.OpenDB from a
// connector: the client cannot read a connection string from it, so
// unless given WithSessionDSN it opens no connection of its own and runs
// its heartbeats on the pool's.
const pqConnector = "postgres/connector"

// netLease and netBeat are the lease and heartbeat of the network
// scenarios: long enough for a loaded machine, short enough for a test.
const (
	netLease = 6 * time.Second
	netBeat  = time.Second
)

// proxied opens a pool of driverName that reaches the test server through a
// new proxy, and returns both with the pool's connection string. The proxy
// is healed and closed when t ends, after the pool.
func proxied(t *testing.T, driverName string) (*sql.DB, *netfault.Proxy, string) {
	t.Helper()
	p, err := netfault.Listen(srv.Addr())
	if errors.Is(err, netfault.ErrNotLoopback) {
		t.Skipf("the test server %s is not on loopback: network faults are made on loopback only", srv.Addr())
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	dsn := strings.Replace(srv.DSN(), srv.Addr(), p.Addr(), 1)
	var db *sql.DB
	if driverName == pqConnector {
		connector, err := pq.NewConnector(dsn)
		require.NoError(t, err)
		db = sql.OpenDB(connector)
	} else {
		db, err = sql.Open(driverName, dsn)
		require.NoError(t, err)
	}
	t.Cleanup(func() {
		_ = p.Heal()
		_ = db.Close()
	})
	return db, p, dsn
}

// netClient makes a client with the network scenarios' lease on table,
// closed when t ends.
func netClient(t *testing.T, db *sql.DB, table string, opts ...pglock.ClientOption) *pglock.Client {
	t.Helper()
	all := append([]pglock.ClientOption{pglock.WithCustomTable(table),
		pglock.WithLeaseDuration(netLease), pglock.WithHeartbeatFrequency(netBeat)}, opts...)
	c, err := pglock.New(db, all...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		assert.NoError(t, c.Close(ctx), "Close")
	})
	return c
}

// waitBeats waits until c has made n more heartbeats.
func waitBeats(t *testing.T, c *pglock.Client, n int64) {
	t.Helper()
	want := c.Stats().Heartbeats + n
	require.Eventually(t, func() bool { return c.Stats().Heartbeats >= want }, waitBound, 10*time.Millisecond)
}

// startRival starts a contender that tries to take names with FailIfLocked every interval until
// stop is closed, and counts what it took.
type contender struct {
	taken atomic.Int64
	done  chan struct{}
}

func startRival(c *pglock.Client, names []string, interval time.Duration, stop <-chan struct{}) *contender {
	k := &contender{done: make(chan struct{})}
	go func() {
		defer close(k.done)
		for {
			for _, name := range names {
				if l, err := c.Acquire(name, pglock.FailIfLocked()); err == nil {
					k.taken.Add(1)
					_ = c.Release(l)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return k
}

// TestDeadConnectionsAreNotADeadDatabase: the connections open when the
// fault strikes go silent (a NAT dropped them), while new connections work.
// The holder's heartbeats give up on the dead ones and go out on new ones:
// every lock survives two leases, and a contender never takes one.
func TestDeadConnectionsAreNotADeadDatabase(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, drv := range append(netDrivers, pqConnector) {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			db, p, _ := proxied(t, drv)
			_, table := newClientTable(t, openDB(t))
			holder := netClient(t, db, table)
			rival := netClient(t, openDB(t), table)
			names := []string{"a", "b"}
			var locks []*pglock.Lock
			for _, name := range names {
				l, err := holder.Acquire(name)
				require.NoError(t, err)
				locks = append(locks, l)
			}
			waitBeats(t, holder, 4) // the holder's own connections are open
			stop := make(chan struct{})
			k := startRival(rival, names, 100*time.Millisecond, stop)
			flows := p.Blackhole()
			time.Sleep(2 * netLease)
			close(stop)
			<-k.done
			s := holder.Stats()
			t.Logf("%s: %d flows blackholed; after two leases: %d of %d locks held, rival took %d; heartbeat failures %d, statements left behind %d",
				drv, flows, heldCount(locks), len(locks), k.taken.Load(), s.HeartbeatFailures, s.AbandonedStatements)
			assert.Zero(t, k.taken.Load(), "a contender took a held lock")
			for _, l := range locks {
				assert.NoError(t, l.Err(), "%s lost", l.Name())
			}
			require.NoError(t, p.Heal())
			for _, l := range locks {
				assert.NoError(t, holder.Release(l))
			}
		})
	}
}

// heldCount counts the locks that are still held.
func heldCount(locks []*pglock.Lock) int {
	n := 0
	for _, l := range locks {
		if !l.IsReleased() {
			n++
		}
	}
	return n
}

// TestFullPartition: no path to the server works for longer than a lease.
// The holder reports the loss within its lease, every call returns within
// its context, and once the network heals the client works again and
// leaves no connection in use.
func TestFullPartition(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, drv := range append(netDrivers, pqConnector) {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			db, p, _ := proxied(t, drv)
			_, table := newClientTable(t, openDB(t))
			c := netClient(t, db, table)
			l, err := c.Acquire("held")
			require.NoError(t, err)
			lead, err := c.NewElection("leader").Campaign(testCtx(t), []byte("me"))
			require.NoError(t, err)
			tx, err := db.BeginTx(testCtx(t), nil)
			require.NoError(t, err)
			waitBeats(t, c, 2)
			_, err = p.Partition()
			require.NoError(t, err)
			cut := time.Now()
			netCallsReturnInTime(t, drv, c, l, lead, tx)
			select {
			case <-l.Done():
				t.Logf("%s: the holder reported the loss %v after the partition (lease %v)", drv, time.Since(cut).Round(time.Millisecond), netLease)
			case <-time.After(netLease + time.Second):
				t.Fatal("the holder did not report the loss within its lease")
			}
			require.NoError(t, p.Heal())
			_ = tx.Rollback()
			netRecovers(t, c, db)
		})
	}
}

// netCallsReturnInTime calls every operation of the client while nothing
// reaches the server, each with a short context, and checks each returns
// within it.
func netCallsReturnInTime(t *testing.T, drv string, c *pglock.Client, l *pglock.Lock, lead *pglock.Leadership, tx *sql.Tx) {
	t.Helper()
	calls := []struct {
		name string
		ctx  time.Duration
		call func(context.Context) error
	}{
		{"AcquireContext", 2 * time.Second, func(ctx context.Context) error { _, err := c.AcquireContext(ctx, "other"); return err }},
		{"SendHeartbeat", time.Second, func(ctx context.Context) error { return c.SendHeartbeat(ctx, l) }},
		{"GetContext", time.Second, func(ctx context.Context) error { _, err := c.GetContext(ctx, "held"); return err }},
		{"GetAllLocksContext", time.Second, func(ctx context.Context) error { _, err := c.GetAllLocksContext(ctx); return err }},
		{"Guard", time.Second, func(ctx context.Context) error { return l.Guard(ctx, tx) }},
		{"Leader", time.Second, func(ctx context.Context) error { _, err := lead.Election().Leader(ctx); return err }},
		{"Proclaim", time.Second, func(ctx context.Context) error { return lead.Proclaim(ctx, []byte("v2")) }},
		{"Campaign", time.Second, func(ctx context.Context) error { _, err := c.NewElection("e2").Campaign(ctx, nil); return err }},
		{"ForceRelease", time.Second, func(ctx context.Context) error { return c.ForceRelease(ctx, "nobody") }},
		{"Resign", time.Second, func(ctx context.Context) error { return lead.Resign(ctx) }},
		{"ReleaseContext", 3 * time.Second, func(ctx context.Context) error { return c.ReleaseContext(ctx, l) }},
	}
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), call.ctx)
			defer cancel()
			start := time.Now()
			err := call.call(ctx)
			took := time.Since(start)
			t.Logf("%s: %s with a %v context returned after %v: %v", drv, call.name, call.ctx, took.Round(time.Millisecond), err)
			assert.Error(t, err, call.name)
			assert.Less(t, took, call.ctx+100*time.Millisecond, "%s outlived its context", call.name)
		}()
	}
	wg.Wait()
}

// netRecovers checks that a client whose network healed acquires again,
// and that its pool ends with no connection in use.
func netRecovers(t *testing.T, c *pglock.Client, db *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*netLease)
	defer cancel()
	l, err := c.AcquireContext(ctx, "after")
	require.NoError(t, err, "the client works again once the network heals")
	require.NoError(t, c.Release(l))
	require.Eventually(t, func() bool { return db.Stats().InUse == 0 }, waitBound, 10*time.Millisecond,
		"connections still in use: %+v", db.Stats())
}

func TestStalledConnectionsNeverBlockACaller(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, drv := range netDrivers {
		t.Run(drv+"/waiter whose listener cannot connect", func(t *testing.T) {
			t.Parallel()
			db, p, _ := proxied(t, drv)
			_, table := newClientTable(t, openDB(t))
			holder := netClient(t, openDB(t), table)
			waiter := netClient(t, db, table)
			l, err := holder.Acquire("held")
			require.NoError(t, err)
			_, err = waiter.Get("held") // the waiter's pool has a connection
			require.NoError(t, err)
			require.NoError(t, p.SetNewConns(netfault.Hang))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			_, err = waiter.AcquireContext(ctx, "held")
			took := time.Since(start)
			t.Logf("%s: AcquireContext with a 2s context, its listener's connection hanging, returned after %v", drv, took.Round(time.Millisecond))
			require.ErrorIs(t, err, pglock.ErrNotAcquired)
			assert.Less(t, took, 2100*time.Millisecond)
			require.NoError(t, p.SetNewConns(netfault.Forward))
			require.NoError(t, holder.Release(l))
		})
		t.Run(drv+"/release while the table is locked", func(t *testing.T) {
			t.Parallel()
			db, _, _ := proxied(t, drv)
			admin := openDB(t)
			_, table := newClientTable(t, admin)
			c := netClient(t, db, table)
			l, err := c.Acquire("held")
			require.NoError(t, err)
			tx, err := admin.Begin()
			require.NoError(t, err)
			_, err = tx.Exec(`LOCK TABLE ` + quote(table) + ` IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = c.ReleaseContext(ctx, l)
			took := time.Since(start)
			t.Logf("%s: ReleaseContext with a 300ms context, the table locked, returned after %v: %v", drv, took.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Less(t, took, 400*time.Millisecond)
			require.NoError(t, tx.Rollback())
			if !l.IsReleased() {
				require.NoError(t, c.Release(l))
			}
		})
	}
}

// TestBusyPoolKeepsLocks: the caller's own work holds every connection of
// the pool for longer than a lease. Heartbeats do not queue behind it: they
// run on the client's own connections, opened with the connection string
// the pool was opened with, or, for a pool made from a connector, the one
// given with WithSessionDSN. No lock is lost and no contender takes one.
func TestBusyPoolKeepsLocks(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	session := []pglock.ClientOption{pglock.WithSessionDSN(srv.DSN())}
	opens := map[string]struct {
		open func(t *testing.T) *sql.DB
		opts []pglock.ClientOption
	}{
		"postgres/sql.Open":                 {func(t *testing.T) *sql.DB { t.Helper(); return openDSN(t, srv.DSN()) }, nil},
		"pgx/sql.Open":                      {func(t *testing.T) *sql.DB { t.Helper(); return openDriver(t, "pgx") }, nil},
		"postgres/connector+WithSessionDSN": {openConnector, session},
		"pgx/stdlib.OpenDB+WithSessionDSN":  {func(t *testing.T) *sql.DB { t.Helper(); return openDriver(t, pgxConnector) }, session},
	}
	for name, o := range opens {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const poolSize = 3
			db := o.open(t)
			db.SetMaxOpenConns(poolSize)
			_, table := newClientTable(t, openDB(t))
			holder := netClient(t, db, table, o.opts...)
			rival := netClient(t, openDB(t), table)
			names := []string{"a", "b"}
			var locks []*pglock.Lock
			for _, name := range names {
				l, err := holder.Acquire(name)
				require.NoError(t, err)
				locks = append(locks, l)
			}
			busy := occupyPool(t, db, poolSize, netLease*3/2)
			stop := make(chan struct{})
			k := startRival(rival, names, 100*time.Millisecond, stop)
			time.Sleep(netLease * 3 / 2)
			close(stop)
			<-k.done
			t.Logf("%s: pool of %d, %d connections taken by the caller's work for 1.5 leases: %d of %d locks held, rival took %d, heartbeats %d",
				name, poolSize, busy(), heldCount(locks), len(locks), k.taken.Load(), holder.Stats().Heartbeats)
			assert.Zero(t, k.taken.Load())
			for _, l := range locks {
				assert.NoError(t, l.Err(), "%s lost", l.Name())
			}
		})
	}
}

// occupyPool takes every connection of db it can get, up to n, for d, as
// the caller's own long work would. It returns how many it got once it got
// them; the goroutines end after d, and t's end waits for them.
func occupyPool(t *testing.T, db *sql.DB, n int, d time.Duration) func() int {
	t.Helper()
	var (
		got atomic.Int64
		wg  sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	for range n {
		conn, err := db.Conn(ctx)
		if err != nil {
			break // the client keeps the others
		}
		got.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			_, _ = conn.ExecContext(context.Background(), `SELECT pg_sleep($1)`, d.Seconds())
		}()
	}
	t.Cleanup(wg.Wait)
	require.Positive(t, got.Load(), "the caller's work got no connection at all")
	return func() int { return int(got.Load()) }
}

// openConnector opens a lib/pq pool from a connector, with no connection
// string the client could read, closed when t ends.
func openConnector(t *testing.T) *sql.DB {
	t.Helper()
	connector, err := pq.NewConnector(srv.DSN())
	require.NoError(t, err)
	db := sql.OpenDB(connector)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestCloseStopsEverything: Close releases the locks the client holds,
// ends its waiters and observers, and leaves no goroutine behind; when the
// database cannot be reached it still returns within its context, with the
// locks ended.
func TestCloseStopsEverything(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	t.Run("reachable", func(t *testing.T) {
		t.Parallel()
		admin := openDB(t)
		_, table := newClientTable(t, admin)
		holder := netClient(t, openDB(t), table)
		c, err := pglock.New(openDB(t), pglock.WithCustomTable(table), pglock.WithLeaseDuration(netLease), pglock.WithHeartbeatFrequency(netBeat))
		require.NoError(t, err)
		l, err := c.Acquire("mine")
		require.NoError(t, err)
		held, err := holder.Acquire("theirs")
		require.NoError(t, err)
		waited := acquireAsyncErr(c, "theirs")
		require.Eventually(t, func() bool { return c.Stats().Waits == 1 }, waitBound, time.Millisecond)
		observed := c.NewElection("mine").Observe(context.Background())
		<-observed
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		require.NoError(t, c.Close(ctx))
		t.Logf("Close with a held lock, a waiter and an observer took %v", time.Since(start).Round(time.Millisecond))
		assert.True(t, l.IsReleased())
		_, err = c.Get("mine")
		assert.ErrorIs(t, err, pglock.ErrLockNotFound, "the lock was released")
		assert.ErrorIs(t, <-waited, pglock.ErrClosed)
		for range observed {
		}
		_, err = c.Acquire("later")
		assert.ErrorIs(t, err, pglock.ErrClosed)
		require.NoError(t, holder.Release(held))
	})
	for _, drv := range netDrivers {
		t.Run(drv+"/partitioned", func(t *testing.T) {
			t.Parallel()
			db, p, _ := proxied(t, drv)
			_, table := newClientTable(t, openDB(t))
			c, err := pglock.New(db, pglock.WithCustomTable(table), pglock.WithLeaseDuration(netLease), pglock.WithHeartbeatFrequency(netBeat))
			require.NoError(t, err)
			l, err := c.Acquire("mine")
			require.NoError(t, err)
			_, err = p.Partition()
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			start := time.Now()
			err = c.Close(ctx)
			took := time.Since(start)
			t.Logf("%s: Close with a 1s context, partitioned, returned after %v: %v", drv, took.Round(time.Millisecond), err)
			assert.Less(t, took, 1100*time.Millisecond)
			assert.True(t, l.IsReleased(), "the lock ended all the same")
			require.NoError(t, p.Heal())
			ctx, cancel = context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			assert.NoError(t, c.Close(ctx), "once healed, Close joins what was left")
		})
	}
}

// acquireAsyncErr runs Acquire on its own goroutine and hands back its error.
func acquireAsyncErr(c *pglock.Client, name string) <-chan error {
	out := make(chan error, 1)
	go func() {
		l, err := c.Acquire(name)
		if err == nil {
			_ = c.Release(l)
		}
		out <- err
	}()
	return out
}

// TestLatency: every connection has 200 ms added each way. Locks held with
// a 5 s lease and a 1 s heartbeat survive, a release still hands the lock
// over to a waiter, and nothing is lost.
func TestLatency(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	const lease, beat, delay = 5 * time.Second, time.Second, 200 * time.Millisecond
	for _, drv := range netDrivers {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			db, p, _ := proxied(t, drv)
			p.SetLatency(delay)
			_, table := newClientTable(t, openDB(t))
			opts := []pglock.ClientOption{pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(beat)}
			holder := netClient(t, db, table, opts...)
			waiter := netClient(t, db, table, opts...)
			a, err := holder.Acquire("a")
			require.NoError(t, err)
			b, err := holder.Acquire("b")
			require.NoError(t, err)
			got := acquireAsync(testCtx(t), waiter, "a")
			time.Sleep(2 * lease)
			require.NoError(t, a.Err(), "a held for two leases")
			require.NoError(t, b.Err(), "b held for two leases")
			released := time.Now()
			require.NoError(t, holder.Release(a))
			r := <-got
			require.NoError(t, r.err)
			t.Logf("%s: %v each way; two leases held, %d heartbeats, %d failed; handoff after release %v",
				drv, delay, holder.Stats().Heartbeats, holder.Stats().HeartbeatFailures, r.at.Sub(released).Round(time.Millisecond))
			require.NoError(t, waiter.Release(r.l))
			require.NoError(t, holder.Release(b))
			assert.Zero(t, holder.Stats().Lost+waiter.Stats().Lost)
		})
	}
}
