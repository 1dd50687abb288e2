package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"cirello.io/pglock"
)

// BenchmarkIdleFleet measures what a fleet costs the database while nothing
// changes hands: W clients, each with its own *sql.DB as separate processes
// would have, wait on one held name (waiters), observe one election's
// leader (observers), or campaign in one election whose leader holds on
// (candidates). It reports the server's transactions per second over three
// leases, from statsLag after the clients began (from
// pg_stat_database, less those of the holder alone over two leases), and
// per waiting client per lease; then, for waiters and candidates, the
// handoff latency (p50, p99) over 20 releases, each taken by one of the W,
// the server transactions per handoff beyond the idle rate (from the
// release to the next holder's acquire, the release included), and the
// notifications delivered per handoff, each of which costs its listening
// backend a transaction that pg_stat_database counts only when the
// session ends.
// It measures once per run, whatever b.N.
//
// The lease is 5 s and the heartbeat 1 s; PGLOCK_IDLE_LEASE changes the
// lease (the heartbeat stays a fifth of it). PGLOCK_BENCH_NO_QUEUE=1 drops
// the table's fair queue, so that waiters race as on a table made by the
// original library.
//
//	go test -run '^$' -bench IdleFleet -benchtime 1x ./internal/bench
func BenchmarkIdleFleet(b *testing.B) {
	lease := 5 * time.Second
	if v := os.Getenv("PGLOCK_IDLE_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		lease = d
	}
	for _, role := range []string{"waiters", "observers", "candidates"} {
		for _, w := range []int{1, 10, 40} {
			b.Run(fmt.Sprintf("%s=%d", role, w), func(b *testing.B) {
				newFleet(b, lease, w).measure(b, role)
			})
		}
	}
}

// fleet is a holder and W other clients on one table, each on a pool of
// its own.
type fleet struct {
	lease   time.Duration
	table   string
	stats   *sql.DB // reads pg_stat_database
	holder  *pglock.Client
	clients []*pglock.Client
}

func newFleet(b *testing.B, lease time.Duration, w int) *fleet {
	b.Helper()
	f := &fleet{lease: lease, stats: openDB(b, 1)}
	f.table = newTable(b, f.stats)
	if os.Getenv("PGLOCK_BENCH_NO_QUEUE") == "1" {
		dropQueue(b, f.stats, f.table)
	}
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(lease), pglock.WithHeartbeatFrequency(lease / 5)}
	f.holder = client(b, openDB(b, 4), f.table, opts...)
	for range w {
		f.clients = append(f.clients, client(b, openDB(b, 4), f.table, opts...))
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, c := range append(f.clients, f.holder) {
			_ = c.Close(ctx)
		}
	})
	return f
}

// transactions reads the server's committed and rolled-back transactions
// of this database so far.
func (f *fleet) transactions(b *testing.B) int64 {
	b.Helper()
	var n int64
	err := f.stats.QueryRow(`SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// statsLag is how long the server may keep a backend's transaction counts
// before pg_stat_database shows them: a backend that goes idle within a
// second of its last report defers the next one by PGSTAT_IDLE_INTERVAL
// (10 s). A window that opens sooner after the clients start counts the
// transactions of their start (connection set-up, LISTEN, the probe, the
// first attempt) as if they were waiting's.
const statsLag = 11 * time.Second

// settle is statsLag, or half a lease in a quick run.
func settle(lease time.Duration) time.Duration {
	if quick {
		return lease / 2
	}
	return statsLag
}

// rate measures the server's transactions per second over d, from
// statsLag on, once everything the clients did as they started is
// counted.
func (f *fleet) rate(b *testing.B, d time.Duration) float64 {
	b.Helper()
	time.Sleep(settle(f.lease))
	start, n0 := time.Now(), f.transactions(b)
	time.Sleep(d)
	n1 := f.transactions(b)
	return float64(n1-n0-1) / time.Since(start).Seconds() // less the first read's own transaction
}

// measure runs one role: the holder alone first, then with the W others
// at work, and then the handoffs.
func (f *fleet) measure(b *testing.B, role string) {
	b.Helper()
	name := "idle-" + role
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader, err := f.holder.NewElection(name).Campaign(ctx, []byte("holder"))
	if err != nil {
		b.Fatal(err)
	}
	base := f.rate(b, 2*f.lease)
	var wg sync.WaitGroup
	won := make(chan *pglock.Lock, len(f.clients))
	seen := make(chan sighted, 64*len(f.clients))
	for _, c := range f.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.act(ctx, c, role, name, won, seen)
		}()
	}
	waiting := f.rate(b, 3*f.lease) - base
	perClient := waiting / float64(len(f.clients)) * f.lease.Seconds()
	listening := 0
	for _, c := range f.clients {
		if c.Stats().Listening {
			listening++
		}
	}
	b.ReportMetric(float64(listening), "listening-clients")
	b.ReportMetric(waiting, "stmts/s")
	b.ReportMetric(perClient, "stmts/client/lease")
	if role != "observers" {
		n0, t0, heard0 := f.transactions(b), time.Now(), f.notifications()
		lat := f.handoffs(b, leader.Lock(), won)
		time.Sleep(settle(f.lease))
		n1, heard := f.transactions(b), f.notifications()-heard0
		extra := float64(n1-n0-1) - (waiting+base)*time.Since(t0).Seconds()
		b.ReportMetric(float64(heard)/float64(len(lat)), "deliveries/handoff")
		b.ReportMetric(ms(quantile(lat, 0.5)), "handoff-p50-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), "handoff-p99-ms")
		b.ReportMetric(extra/float64(len(lat)), "xacts/handoff")
	} else {
		lat := f.proclaims(b, leader, seen)
		b.ReportMetric(ms(quantile(lat, 0.5)), "observed-p50-ms")
		b.ReportMetric(ms(quantile(lat, 0.99)), "observed-p99-ms")
		if err := leader.Resign(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	b.Logf("%s=%d, lease %v: %.1f statements/s beyond the holder's %.1f, %.2f per client per lease",
		role, len(f.clients), f.lease, waiting, base, perClient)
}

// notifications sums the notifications the fleet's listeners received.
// Each is read by a listening backend in a transaction of its own, which
// pg_stat_database counts only once that session ends: the transactions
// per handoff leave them out, and this counts them.
func (f *fleet) notifications() int64 {
	var n int64
	for _, c := range append(f.clients, f.holder) {
		n += c.Stats().Notifications
	}
	return n
}

// sighted is a leader value an observer received, and when.
type sighted struct {
	value string
	at    time.Time
}

// act has c wait, observe or campaign on name until ctx ends, sending the
// locks it wins to won, and the leader values it observes to seen.
func (f *fleet) act(ctx context.Context, c *pglock.Client, role, name string, won chan<- *pglock.Lock, seen chan<- sighted) {
	for ctx.Err() == nil {
		var (
			l   *pglock.Lock
			err error
		)
		switch role {
		case "observers":
			for ld := range c.NewElection(name).Observe(ctx) {
				select {
				case seen <- sighted{string(ld.Value), time.Now()}:
				default:
				}
			}
			return
		case "candidates":
			var ld *pglock.Leadership
			if ld, err = c.NewElection(name).Campaign(ctx, []byte("candidate")); err == nil {
				l = ld.Lock()
			}
		default:
			l, err = c.AcquireContext(ctx, name)
		}
		if errors.Is(err, pglock.ErrNotAcquired) && ctx.Err() != nil {
			return
		}
		if err == nil {
			won <- l
		}
	}
}

// handoffs releases the held lock 20 times, and measures each time how long
// one of the waiting clients takes to hold it; the winner then releases.
func (f *fleet) handoffs(b *testing.B, held *pglock.Lock, won <-chan *pglock.Lock) []time.Duration {
	b.Helper()
	var lat []time.Duration
	for range 20 {
		start := time.Now()
		if err := held.Close(); err != nil {
			b.Fatal(err)
		}
		select {
		case held = <-won:
			lat = append(lat, time.Since(start))
		case <-time.After(2 * f.lease):
			b.Fatal("no waiting client took the lock over")
		}
		time.Sleep(50 * time.Millisecond) // the others go back to waiting
	}
	if err := held.Close(); err != nil {
		b.Fatal(err)
	}
	return lat
}

// proclaims has the leader publish 20 values, one after the other, and
// measures how long each observer takes to receive each.
func (f *fleet) proclaims(b *testing.B, leader *pglock.Leadership, seen <-chan sighted) []time.Duration {
	b.Helper()
	var lat []time.Duration
	for i := range 20 {
		value := fmt.Sprintf("value-%d", i)
		start := time.Now()
		if err := leader.Proclaim(context.Background(), []byte(value)); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(f.clients); {
			select {
			case s := <-seen:
				if s.value == value {
					lat = append(lat, s.at.Sub(start))
					got++
				}
			case <-time.After(2 * f.lease):
				b.Fatalf("%d of %d observers saw %s", got, len(f.clients), value)
			}
		}
	}
	return lat
}
