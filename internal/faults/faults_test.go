package faults_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

var bg = context.Background()

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// newClients makes a client on a fresh table, and a second one on the same
// table through another pool.
func newClients(t *testing.T, opts ...pglock.ClientOption) (a, b *pglock.Client) {
	t.Helper()
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	opts = append([]pglock.ClientOption{pglock.WithCustomTable("faults_" + hex.EncodeToString(buf))}, opts...)
	if os.Getenv("PGLOCK_FAULTS_DEBUG") != "" {
		opts = append(opts, pglock.WithSlog(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	}
	a, err := pglock.New(openDB(t), opts...)
	require.NoError(t, err)
	require.NoError(t, a.CreateTable())
	t.Cleanup(func() { _ = a.DropTable() })
	b, err = pglock.New(openDB(t), opts...)
	require.NoError(t, err)
	return a, b
}

// contender tries to acquire name with b in a loop of short attempts, as a
// process that keeps retrying through an outage would, until it gets the
// lock or stop is closed. It reports when it got the lock, and counts the
// attempts that failed otherwise than by running out of time (every failed
// attempt wraps ErrNotAcquired; one that met the outage wraps its cause).
type contender struct {
	got    chan time.Time // receives when the lock was acquired
	errs   atomic.Int64
	stop   chan struct{}
	joined sync.WaitGroup
}

func contend(b *pglock.Client, name string) *contender {
	c := &contender{got: make(chan time.Time, 1), stop: make(chan struct{})}
	c.joined.Add(1)
	go func() {
		defer c.joined.Done()
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
			l, err := b.AcquireContext(ctx, name)
			cancel()
			if err == nil {
				c.got <- time.Now()
				_ = b.Release(l)
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				c.errs.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	return c
}

func (c *contender) end() {
	close(c.stop)
	c.joined.Wait()
}

// waitRefresh waits until the lock's record version number moves from rvn,
// that is until a heartbeat landed, and fails t if the lock ends first.
func waitRefresh(t *testing.T, l *pglock.Lock, rvn int64, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for l.RecordVersionNumber() == rvn {
		select {
		case <-l.Done():
			t.Fatalf("lock lost: %v", l.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > limit {
			t.Fatalf("no heartbeat landed in %v", limit)
		}
	}
	return time.Since(start)
}

// TestOutageSurvival: a lock with an 8 s lease and 1 s heartbeats survives
// a 3 s stop of the server, and a contender retrying all along never gets
// it until the holder releases it.
func TestOutageSurvival(t *testing.T) {
	fullSuiteOnly(t)
	if srv.External() {
		t.Skip("needs a throwaway server to stop")
	}
	const lease, freq, outage = 8 * time.Second, time.Second, 3 * time.Second
	a, b := newClients(t, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	l, err := a.Acquire("outage")
	require.NoError(t, err)
	c := contend(b, "outage")
	defer c.end()
	waitRefresh(t, l, l.RecordVersionNumber(), 10*freq) // the contender watches a heartbeat land

	require.NoError(t, srv.Stop())
	atStop := l.RecordVersionNumber()
	stopped := time.Now()
	time.Sleep(outage)
	require.NoError(t, srv.Restart())
	restarted := time.Now()
	took := waitRefresh(t, l, atStop, lease)
	t.Logf("server down %v; first heartbeat after the restart landed %v later; heartbeat failures %d; contender errors %d",
		restarted.Sub(stopped), took, a.Stats().HeartbeatFailures, c.errs.Load())
	// Keep holding a little, the contender still trying.
	select {
	case <-l.Done():
		t.Fatalf("lock lost: %v", l.Err())
	case at := <-c.got:
		t.Fatalf("the contender acquired the lock %v after the restart while it was held", at.Sub(restarted))
	case <-time.After(2 * freq):
	}
	require.NoError(t, l.Err())
	require.Positive(t, a.Stats().HeartbeatFailures, "no heartbeat failed: was the server down?")
	require.Positive(t, c.errs.Load(), "the contender saw no error: was it trying during the outage?")
	require.Zero(t, a.Stats().Lost)

	released := time.Now()
	require.NoError(t, a.Release(l))
	select {
	case at := <-c.got:
		require.True(t, at.After(released))
	case <-time.After(3 * lease):
		t.Fatal("the contender did not get the released lock")
	}
}

// TestTerminatedBackends: killing every backend over and over while the
// lock heartbeats does not lose it. The kills come every lease/6: a new
// connection must live long enough to be used, which on a loaded machine
// running -race takes a few hundred milliseconds.
func TestTerminatedBackends(t *testing.T) {
	fullSuiteOnly(t)
	const lease, freq = 3 * time.Second, 300 * time.Millisecond
	a, b := newClients(t, pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(freq))
	killer := openDB(t)
	killer.SetMaxOpenConns(1)
	l, err := a.Acquire("terminated")
	require.NoError(t, err)
	c := contend(b, "terminated")
	defer c.end()

	var killed int64
	until := time.Now().Add(2 * lease)
	for time.Now().Before(until) {
		var n int64
		err := killer.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()`).Scan(&n)
		require.NoError(t, err)
		killed += n
		select {
		case <-l.Done():
			t.Fatalf("lock lost after %d backends killed: %v", killed, l.Err())
		case at := <-c.got:
			t.Fatalf("the contender acquired the held lock at %v", at)
		case <-time.After(lease / 6):
		}
	}
	rvn := l.RecordVersionNumber()
	waitRefresh(t, l, rvn, lease)
	st := a.Stats()
	t.Logf("%d backends killed in %v; heartbeats %d, failed %d; contender errors %d", killed, 2*lease, st.Heartbeats, st.HeartbeatFailures, c.errs.Load())
	// lib/pq drops most killed idle connections before use, so only some
	// heartbeats fail; the count is logged, not required.
	require.Positive(t, killed)
	require.Zero(t, st.Lost)
	require.NoError(t, a.Release(l))
}
