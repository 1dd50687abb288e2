package pglock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
)

// These tests fail a primary over to a real streaming standby, started from
// the local PostgreSQL binaries even when PGLOCK_TEST_DSN names an external
// server: the primary is killed (SIGKILL, like a crashed machine) and the
// standby promoted. Clients reach whichever server accepts writes through a
// multi-host connection string with target_session_attrs=read-write.

// failoverPair is a primary and a streaming standby of it, for one test.
type failoverPair struct {
	primary, standby *pgserver.Server
	// dsn lists the primary, then the standby, and connects to the one
	// that accepts writes.
	dsn string
}

// newFailoverPair starts a primary with synchronous_commit on and a
// standby replicating synchronously (synchronous) or asynchronously, both
// closed when t ends.
func newFailoverPair(t *testing.T, synchronous bool) *failoverPair {
	t.Helper()
	primary, err := pgserver.StartWith(pgserver.Options{SynchronousCommit: true, Local: true})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, primary.Close()) })
	standby, err := primary.StartStandby(synchronous)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, standby.Close()) })
	// connect_timeout bounds a connection attempt to a server that does
	// not answer; a killed one on loopback refuses at once.
	dsn := pgserver.MultiHostDSN(primary, standby) + "&connect_timeout=2"
	return &failoverPair{primary: primary, standby: standby, dsn: dsn}
}

// failover kills the primary, waits outage, and promotes the standby. It
// returns when the primary was dead and when the standby accepted writes.
func (p *failoverPair) failover(t *testing.T, outage time.Duration) (killed, promoted time.Time) {
	t.Helper()
	require.NoError(t, p.primary.Kill())
	killed = time.Now()
	time.Sleep(outage)
	require.NoError(t, p.standby.Promote())
	promoted = time.Now()
	t.Logf("failover: primary killed, standby promoted %v later (outage %v, promotion %v)",
		promoted.Sub(killed).Round(time.Millisecond), outage, promoted.Sub(killed.Add(outage)).Round(time.Millisecond))
	return killed, promoted
}

// openFailoverDB opens a pool with driverName on the pair's multi-host DSN,
// closed when t ends.
func openFailoverDB(t *testing.T, driverName string, p *failoverPair) *sql.DB {
	t.Helper()
	db, err := sql.Open(driverName, p.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// closeClients closes the clients when t ends, joining their goroutines.
func closeClients(t *testing.T, clients ...*pglock.Client) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		for _, c := range clients {
			_ = c.Close(ctx) // releases fail once the servers are gone; Close still joins
		}
	})
}

// failoverLease is the lease of the failovers shorter than a lease, with
// frequent heartbeats.
var failoverLease = []pglock.ClientOption{
	pglock.WithLeaseDuration(6 * time.Second),
	pglock.WithHeartbeatFrequency(200 * time.Millisecond),
}

// acquireAll acquires every name through c, failing t on error.
func acquireAll(t *testing.T, c *pglock.Client, names []string) []*pglock.Lock {
	t.Helper()
	locks := make([]*pglock.Lock, len(names))
	for i, name := range names {
		l, err := c.AcquireContext(testCtx(t), name, pglock.FailIfLocked())
		require.NoError(t, err, name)
		locks[i] = l
	}
	return locks
}

// lockNames returns n names with prefix.
func lockNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return names
}

// rowOf reads name's row in table: its owner and RVN; ok is false when
// there is none.
func rowOf(t *testing.T, db *sql.DB, table, name string) (owner string, rvn int64, ok bool) {
	t.Helper()
	var n sql.NullInt64
	err := db.QueryRowContext(testCtx(t), `SELECT owner, record_version_number FROM `+quote(table)+` WHERE name = $1`, name).Scan(&owner, &n)
	if err == sql.ErrNoRows {
		return "", 0, false
	}
	require.NoError(t, err)
	return owner, n.Int64, true
}

// rivals runs a goroutine that keeps trying to take names with
// FailIfLocked through c, until stopped, and remembers the names it took.
type rivals struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	took   []string // written by the goroutine, read after wg.Wait
}

// startRivals starts the goroutine; it is stopped when t ends at the
// latest.
func startRivals(t *testing.T, c *pglock.Client, names []string) *rivals {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &rivals{cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for ctx.Err() == nil {
			for _, name := range names {
				actx, acancel := context.WithTimeout(ctx, time.Second)
				l, err := c.AcquireContext(actx, name, pglock.FailIfLocked())
				acancel()
				if err == nil {
					r.took = append(r.took, name)
					_ = c.Release(l)
				}
			}
			time.Sleep(20 * time.Millisecond) // attempts fail fast while no server accepts writes
		}
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop stops the goroutine and returns the names it took.
func (r *rivals) stop() []string {
	r.cancel()
	r.wg.Wait()
	return r.took
}

// acquirer runs a goroutine acquiring fresh names through c back to back,
// across the failover, and remembers those acquired.
type acquirer struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	got    []acquired
}

// acquired is a lock an Acquire returned, and when it returned.
type acquired struct {
	l  *pglock.Lock
	at time.Time
}

// startAcquirer starts the goroutine, pausing pause between acquisitions;
// it is stopped when t ends at the latest.
func startAcquirer(t *testing.T, c *pglock.Client, prefix string, pause time.Duration) *acquirer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &acquirer{cancel: cancel}
	t.Cleanup(func() { a.stop() })
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			actx, acancel := context.WithTimeout(ctx, time.Second)
			// The heartbeat outlives the call's context.
			l, err := c.AcquireContext(actx, fmt.Sprintf("%s-%d", prefix, i), pglock.FailIfLocked(),
				pglock.WithCustomHeartbeatContext(context.Background()))
			acancel()
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			a.mu.Lock()
			a.got = append(a.got, acquired{l, time.Now()})
			a.mu.Unlock()
			time.Sleep(pause)
		}
	}()
	return a
}

// locks returns the locks acquired so far.
func (a *acquirer) locks() []*pglock.Lock {
	a.mu.Lock()
	defer a.mu.Unlock()
	locks := make([]*pglock.Lock, len(a.got))
	for i, g := range a.got {
		locks[i] = g.l
	}
	return locks
}

// acquiredBefore returns the locks acquired before at.
func (a *acquirer) acquiredBefore(at time.Time) []acquired {
	a.mu.Lock()
	defer a.mu.Unlock()
	var got []acquired
	for _, g := range a.got {
		if g.at.Before(at) {
			got = append(got, g)
		}
	}
	return got
}

// stop stops the goroutine and returns the locks it acquired.
func (a *acquirer) stop() []acquired {
	a.cancel()
	a.wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.got
}

// waitFor polls cond every 10ms until it holds and returns how long that
// took, failing t after limit with what, and what state says then.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool, state ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			for _, s := range state {
				what += "; " + s()
			}
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// acquireRetrying is acquireAsync for a waiter that waits across a
// failover: AcquireContext ends its wait with an UnavailableError while no
// server accepts writes, and the waiter calls it again until ctx ends.
func acquireRetrying(ctx context.Context, c *pglock.Client, name string) <-chan acquireResult {
	out := make(chan acquireResult, 1)
	go func() {
		for {
			l, err := c.AcquireContext(ctx, name)
			var unavailable *pglock.UnavailableError
			if errors.As(err, &unavailable) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			out <- acquireResult{l, err, time.Now()}
			return
		}
	}()
	return out
}
