package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cirello.io/pglock"
)

// The environment variables of the soak benchmarks. Without PGLOCK_SOAK=1
// they run in smoke mode: a few hundred locks held for a second, so that
// the CI's `-bench . -benchtime 2x` smoke run stays short. Each of the
// others overrides one parameter in either mode.
const (
	envSoak         = "PGLOCK_SOAK"          // "1": the full soak
	envSoakDuration = "PGLOCK_SOAK_DURATION" // how long the locks are held, both benchmarks (e.g. 60s)
	envSoakPrefix   = "PGLOCK_SOAK_"         // BenchmarkSoak: LOCKS, HEARTBEAT, LEASE
	envManyPrefix   = "PGLOCK_SOAK_MANY_"    // BenchmarkSoakManyProcesses: the same and PROCS
	envSoakLog      = "PGLOCK_SOAK_LOG"      // "1": the clients log to stderr (see soakLogger)
)

// soakConfig is one soak's parameters.
type soakConfig struct {
	duration  time.Duration // how long the locks are held
	locks     int           // locks held, over all processes
	heartbeat time.Duration
	lease     time.Duration
	procs     int // worker processes (BenchmarkSoakManyProcesses only)
}

// soakReleasers is how many goroutines of a client release its locks at
// the end of a soak: a few, since each release may dial a connection of
// its own and must be done within a quarter of the lease, and the locks
// not yet released keep heartbeating meanwhile. Locks are acquired one at
// a time per client: inserts from many sessions at once make PostgreSQL
// extend a table by many pages at a time (up to 20 per waiting session), so
// the table would start the hold padded with empty pages that absorb its
// growth, by an amount that depends on the scheduling.
const soakReleasers = 4

// settle is the pause between the last acquisition and the start of the
// hold, for the acquiring connections to close and report their counts.
func (c soakConfig) settle() time.Duration {
	return min(max(c.duration/20, 100*time.Millisecond), 3*time.Second)
}

// acquireTimeout bounds the acquisition of every lock: a safety net, far
// above what it takes (it allows 10 ms per lock).
func (c soakConfig) acquireTimeout() time.Duration {
	return time.Minute + time.Duration(c.locks)*10*time.Millisecond
}

// loadSoakConfig returns full when PGLOCK_SOAK=1 and smoke otherwise, with
// PGLOCK_SOAK_DURATION and the variables prefix+LOCKS, HEARTBEAT and LEASE
// applied, and PGLOCK_SOAK_MANY_PROCS for BenchmarkSoakManyProcesses.
func loadSoakConfig(tb testing.TB, prefix string, full, smoke soakConfig) soakConfig {
	tb.Helper()
	c := smoke
	if os.Getenv(envSoak) == "1" {
		c = full
	}
	var err error
	set := func(name string, apply func(string) error) {
		if v := os.Getenv(name); v != "" && err == nil {
			if e := apply(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	}
	duration := func(d *time.Duration) func(string) error {
		return func(v string) (e error) { *d, e = time.ParseDuration(v); return e }
	}
	count := func(n *int) func(string) error {
		return func(v string) (e error) { *n, e = strconv.Atoi(v); return e }
	}
	set(envSoakDuration, duration(&c.duration))
	set(prefix+"LOCKS", count(&c.locks))
	set(prefix+"HEARTBEAT", duration(&c.heartbeat))
	set(prefix+"LEASE", duration(&c.lease))
	if prefix == envManyPrefix {
		set(prefix+"PROCS", count(&c.procs))
	}
	if err == nil && (c.duration <= 0 || c.locks <= 0 || c.procs <= 0) {
		err = fmt.Errorf("duration, locks and processes must be positive: %+v", c)
	}
	if err != nil {
		tb.Fatalf("soak settings: %v", err)
	}
	return c
}

// soakNames returns the lock names first to first+n-1.
func soakNames(first, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("soak-%06d", first+i)
	}
	return names
}

// soakAppName returns a fresh application_name for the sessions of one
// soak, so that its monitor can tell when they have all ended.
func soakAppName() string { return "pglock_soak_" + randomSuffix() }

// randomSuffix returns 8 random hex digits, for fresh names.
func randomSuffix() string {
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// dsnWith returns dsn with the connection parameter k set to v, for URL
// and key=value connection strings alike.
func dsnWith(dsn, k, v string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(k, v)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + k + "='" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `'`, `\'`) + "'"
}

// parallel calls f(i) for every i in [0, n) on up to workers goroutines and
// returns the first error; after an error the calls not yet started are
// skipped. Every goroutine has returned when it returns.
func parallel(n, workers int, f func(i int) error) error {
	var (
		next     atomic.Int64
		failed   atomic.Bool
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = err; failed.Store(true) })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// acquireAll acquires every name, one at a time (see soakReleasers). The
// names are the caller's alone, so one found held is an error
// (FailIfLocked), not a wait. On error the locks acquired so far stay held:
// Client.Close releases them.
func acquireAll(ctx context.Context, c *pglock.Client, names []string) ([]*pglock.Lock, error) {
	locks := make([]*pglock.Lock, 0, len(names))
	for _, name := range names {
		l, err := c.AcquireContext(ctx, name, pglock.FailIfLocked())
		if err != nil {
			return locks, fmt.Errorf("acquire %s: %w", name, err)
		}
		locks = append(locks, l)
	}
	return locks, nil
}

// releaseAll releases every lock still held, on soakReleasers goroutines.
// Locks already ended (lost) are skipped: the caller counted them.
func releaseAll(ctx context.Context, c *pglock.Client, locks []*pglock.Lock) error {
	return parallel(len(locks), soakReleasers, func(i int) error {
		l := locks[i]
		if l.IsReleased() {
			return nil
		}
		if err := c.ReleaseContext(ctx, l); err != nil {
			return fmt.Errorf("release %s: %w", l.Name(), err)
		}
		return nil
	})
}

// lostLocks counts the locks that are no longer held, by the reason their
// Err gives.
func lostLocks(locks []*pglock.Lock) (n int64, reasons map[string]int64) {
	for _, l := range locks {
		if err := l.Err(); err != nil {
			if reasons == nil {
				reasons = map[string]int64{}
			}
			reasons[err.Error()]++
			n++
		}
	}
	return n, reasons
}

// soakLogger returns the client option of PGLOCK_SOAK_LOG=1: every record
// of the client's log, Debug and up, on stderr, less the two it writes for
// every lock acquired and released. It returns no option when the variable
// is not set.
func soakLogger() []pglock.ClientOption {
	if os.Getenv(envSoakLog) != "1" {
		return nil
	}
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	return []pglock.ClientOption{pglock.WithSlog(slog.New(quietHandler{h}))}
}

// quietHandler drops the records of routine acquisitions and releases.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "lock acquired" || r.Message == "lock released" {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}

// closeIdle closes the idle connections of db, keeping it usable with up
// to idle idle connections afterwards: a session that ends reports its
// pending statistics at once, where an idle one reports them only after
// ten seconds, which would land them inside the measured window.
func closeIdle(db *sql.DB, idle int) {
	db.SetMaxIdleConns(-1)
	db.SetMaxIdleConns(idle)
}
