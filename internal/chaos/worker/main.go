// Command worker is one contender of the chaos test (package chaos): it
// competes for a few lock names through pglock, and while it believes it
// holds one it writes rows to a ledger table, each in its own transaction
// fenced with Lock.Guard. It never writes to the ledger any other way. At the
// end it prints one JSON line of counts on stdout.
//
// It is a test tool: it lives under internal/ and is built by the chaos test.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	_ "github.com/lib/pq"

	"cirello.io/pglock"
)

// Report is what a worker prints when it ends.
type Report struct {
	Worker  int `json:"worker"`
	Tenures int `json:"tenures"` // locks acquired
	Writes  int `json:"writes"`  // ledger rows committed (as far as the worker knows)
	// Guard refused a write that the worker attempted while Lock.Err was
	// still nil: the holder believed it held the lock, the database said no.
	RefusedHeld int `json:"refused_held"`
	// Guard refused a write after the lock had noticed its loss itself.
	RefusedKnown  int `json:"refused_known"`
	WriteErrors   int `json:"write_errors"`   // writes that failed otherwise (server down, backend killed)
	AcquireErrors int `json:"acquire_errors"` // acquisitions that failed other than by timing out
	ReleaseErrors int `json:"release_errors"` // releases that failed (lock lost, or server down)
}

func main() {
	var (
		dsn       = flag.String("dsn", "", "PostgreSQL DSN")
		table     = flag.String("table", "", "lock table")
		ledger    = flag.String("ledger", "", "ledger table (already quoted-safe identifier)")
		names     = flag.String("names", "a,b", "comma-separated lock names; sem:NAME:N is a semaphore of N permits")
		lease     = flag.Duration("lease", time.Second, "lease duration")
		heartbeat = flag.Duration("heartbeat", 200*time.Millisecond, "heartbeat frequency")
		duration  = flag.Duration("duration", 10*time.Second, "how long to compete")
		id        = flag.Int("id", 0, "worker number")
	)
	flag.Parse()
	if err := run(*dsn, *table, *ledger, strings.Split(*names, ","), *lease, *heartbeat, *duration, *id); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(dsn, table, ledger string, names []string, lease, heartbeat, duration time.Duration, id int) error {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// The owner carries the pid, so the test can find and pause a holder.
	c, err := pglock.New(db,
		pglock.WithCustomTable(table),
		pglock.WithLeaseDuration(lease),
		pglock.WithHeartbeatFrequency(heartbeat),
		pglock.WithOwner(fmt.Sprintf("worker-%d-pid-%d", id, os.Getpid())))
	if err != nil {
		return err
	}
	insert := `INSERT INTO ` + ledger + ` (name, worker, tenure, n) VALUES ($1, $2, $3, $4)`
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	rep := Report{Worker: id}
	for ctx.Err() == nil {
		actx, acancel := context.WithTimeout(ctx, 500*time.Millisecond)
		l, err := acquire(actx, c, names[rand.N(len(names))], pglock.WithCustomHeartbeatContext(ctx))
		acancel()
		if err != nil {
			// Not acquired in time is routine here; any other failure
			// (it wraps ErrNotAcquired too) is counted.
			if !errors.Is(err, context.DeadlineExceeded) {
				if rep.AcquireErrors < 3 {
					fmt.Fprintln(os.Stderr, "acquire:", err)
				}
				rep.AcquireErrors++
				sleep(ctx, 20*time.Millisecond)
			}
			continue
		}
		rep.Tenures++
		hold(ctx, db, l, insert, l.Name(), id, &rep)
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := c.ReleaseContext(rctx, l); err != nil {
			rep.ReleaseErrors++
		}
		rcancel()
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// acquire takes the lock name, or a permit of the semaphore it names as
// sem:NAME:N (its writes then go to the ledger under the permit's row name).
func acquire(ctx context.Context, c *pglock.Client, name string, opts ...pglock.LockOption) (*pglock.Lock, error) {
	sem, ok := strings.CutPrefix(name, "sem:")
	if !ok {
		return c.AcquireContext(ctx, name, opts...)
	}
	semName, n, _ := strings.Cut(sem, ":")
	permits, err := strconv.Atoi(n)
	if err != nil {
		return nil, fmt.Errorf("bad semaphore %q: %w", name, err)
	}
	return c.NewSemaphore(semName, permits).Acquire(ctx, opts...)
}

// hold writes to the ledger under l for a number of writes, as long as the
// worker believes it holds the lock: only Guard tells it otherwise. A worker
// that was paused wakes up with writes still to do.
func hold(ctx context.Context, db *sql.DB, l *pglock.Lock, insert, name string, id int, rep *Report) {
	tenure := l.RecordVersionNumber()
	writes := 3 + rand.N(20)
	for n := 0; ; n++ {
		believed := l.Err() == nil
		err := write(ctx, db, l, insert, name, id, tenure, n)
		switch {
		case err == nil:
			rep.Writes++
		case errors.Is(err, pglock.ErrLockAlreadyReleased) && believed:
			rep.RefusedHeld++
		case errors.Is(err, pglock.ErrLockAlreadyReleased):
			rep.RefusedKnown++
		default:
			if ctx.Err() == nil {
				rep.WriteErrors++
			}
		}
		if errors.Is(err, pglock.ErrLockAlreadyReleased) || ctx.Err() != nil || n >= writes {
			break
		}
		sleep(ctx, 10*time.Millisecond)
	}
}

// write commits one ledger row in its own transaction, fenced by Guard. The
// row's sequence number is drawn inside the transaction after Guard, so the
// ledger's order is the order in which guarded writes happened.
func write(ctx context.Context, db *sql.DB, l *pglock.Lock, insert, name string, worker int, tenure int64, n int) error {
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	tx, err := db.BeginTx(wctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := l.Guard(wctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(wctx, insert, name, worker, tenure, n); err != nil {
		return err
	}
	return tx.Commit()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
