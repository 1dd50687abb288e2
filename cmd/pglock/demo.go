package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/pgserver"
)

// cmdDemo shows a leader election live: workers elect a leader, the leader
// crashes without releasing, a follower takes over a lease later, and then
// a leader resigns and hands over at once. It works on a table of its own,
// pglock_demo_<random>, which it creates and drops. Without --dsn or
// $PGLOCK_DSN it runs on a throwaway PostgreSQL it starts and removes
// (libpq's PG* variables are ignored here, so that the demo works out of
// the box).
func cmdDemo(_ context.Context, g *globals, args []string) int {
	fs := g.flagSet("demo")
	lease := fs.Duration("lease", 3*time.Second, "lease of the workers' locks")
	workers := fs.Int("workers", 3, "number of workers")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	switch {
	case len(pos) > 0:
		return g.usageError(fmt.Errorf("demo takes no arguments, got %q", pos))
	case *lease < 100*time.Millisecond || *workers < 3 || *workers > 20:
		return g.usageError(errors.New("demo needs --lease of at least 100ms and 3 to 20 workers (one crashes, one resigns)"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{g: g, start: time.Now(), lease: *lease, workers: *workers}
	err = d.run(ctx)
	switch {
	case ctx.Err() != nil:
		d.say("interrupted; everything is stopped and removed")
		return exitSignal + int(syscall.SIGINT)
	case err != nil:
		return g.fail(exitError, "demo: %v", err)
	}
	return exitOK
}

// demo is one run of the demo.
type demo struct {
	g       *globals
	start   time.Time
	lease   time.Duration
	workers int
	mu      sync.Mutex // serialises output

	dsn, table string           // where the demo runs
	dbs        []*sql.DB        // one pool per client, closed at the end
	clients    []*pglock.Client // stopped at the end

	events chan event     // leaders report their election here
	kill   chan struct{}  // the leader that receives it crashes
	resign chan struct{}  // the leader that receives it resigns
	wg     sync.WaitGroup // the workers and observers
}

// event is a worker winning the election.
type event struct {
	worker string
	at     time.Time
}

// timings are what the demo measures.
type timings struct {
	first    time.Duration // from the start of the campaigns to the first leader
	takeover time.Duration // from the leader's crash to its successor
	handover time.Duration // from the leader's Resign to its successor
}

// say prints one line with the time since the demo began, scrubbed of
// secrets as pglock's messages are.
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(secretWriter{w: d.g.stdout, g: d.g}, "[%6.2fs] "+format+"\n", append([]any{time.Since(d.start).Seconds()}, args...)...)
}

// run runs the demo on the server given, or on a throwaway one, and stops
// and removes everything it started, whatever happens.
func (d *demo) run(ctx context.Context) (err error) {
	dsn, stopServer, err := d.server()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopServer()) }()
	return d.onServer(ctx, dsn)
}

// server returns the connection string of the server to use: the one given
// by --dsn or $PGLOCK_DSN, or else a throwaway server's that it starts. stop
// stops and removes the throwaway server, and does nothing otherwise.
func (d *demo) server() (dsn string, stop func() error, err error) {
	dsn, from := d.g.dsn, "--dsn"
	if dsn == "" {
		dsn, from = os.Getenv(envDSN), "$"+envDSN
	}
	if dsn != "" {
		d.say("using the server given by %s", from)
		return dsn, func() error { return nil }, nil
	}
	d.say("no --dsn or $%s: starting a throwaway PostgreSQL", envDSN)
	t := time.Now()
	srv, err := pgserver.Start()
	if err != nil {
		return "", nil, err
	}
	if srv.External() {
		d.say("using the server of $%s", pgserver.EnvDSN)
	} else {
		d.say("PostgreSQL %s is up on %s, pid %d, data in %s (took %v)",
			srv.Version(), srv.Addr(), srv.PID(), srv.Dir(), round(time.Since(t)))
	}
	return srv.DSN(), func() error {
		t := time.Now()
		err := srv.Close()
		if !srv.External() {
			d.say("stopped PostgreSQL and removed %s (%v)", srv.Dir(), round(time.Since(t)))
		}
		return err
	}, nil
}

// onServer runs the election on the server at dsn, in a fresh table,
// pglock_demo_<random>, that it creates and drops: --table is ignored, so
// that the demo can never drop a table it did not create.
func (d *demo) onServer(ctx context.Context, dsn string) (err error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	d.dsn, d.table = dsn, "pglock_demo_"+hex.EncodeToString(b)
	defer d.closeClients()
	admin, err := d.newClient("pglock-demo")
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	err = d.g.call(pctx, d.dbs[0].PingContext)
	cancel()
	if err != nil {
		return fmt.Errorf("cannot connect to PostgreSQL: %w", err)
	}
	if err := d.g.call(ctx, func(context.Context) error { return admin.CreateTable() }); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.dropTable(admin)) }()
	d.say("table %q; %d workers campaign to lead %q; lease %v, heartbeat every %v",
		d.table, d.workers, demoElection, d.lease, d.lease/4)
	return d.elect(ctx)
}

// newClient opens a pool of its own and returns a client on the demo's
// table with the given owner; closeClients stops both.
func (d *demo) newClient(owner string) (*pglock.Client, error) {
	db, err := sql.Open("postgres", d.dsn)
	if err != nil {
		return nil, err
	}
	d.dbs = append(d.dbs, db)
	c, err := pglock.New(db, pglock.WithCustomTable(d.table), pglock.WithOwner(owner),
		pglock.WithLeaseDuration(d.lease), pglock.WithHeartbeatFrequency(d.lease/4))
	if err != nil {
		return nil, err
	}
	d.clients = append(d.clients, c)
	return c, nil
}

// closeClients stops every client and closes every pool, within
// --exit-timeout in all.
func (d *demo) closeClients() {
	ctx, cancel := d.g.exitContext()
	defer cancel()
	for _, c := range d.clients {
		d.g.shutdown(ctx, nil, c)
	}
	for _, db := range d.dbs {
		d.g.shutdown(ctx, db, nil)
	}
}

// dropTable drops the demo's table, within --exit-timeout.
func (d *demo) dropTable(admin *pglock.Client) error {
	ctx, cancel := d.g.exitContext()
	defer cancel()
	if err := d.g.call(ctx, func(context.Context) error { return admin.DropTable() }); err != nil {
		return err
	}
	d.say("dropped table %q", d.table)
	return nil
}

// elect starts the observer and the workers, crashes a leader, makes the
// next one resign, stops them all and prints how long each change of
// leader took.
func (d *demo) elect(ctx context.Context) error {
	d.events = make(chan event, d.workers)
	d.kill, d.resign = make(chan struct{}), make(chan struct{})
	wctx, stopWorkers := context.WithCancel(ctx)
	defer func() {
		stopWorkers()
		d.wg.Wait()
	}()
	began := time.Now()
	if err := d.startElection(wctx); err != nil {
		return err
	}
	tm, err := d.scenario(ctx, began)
	if err != nil {
		return err
	}
	d.say("stopping the workers")
	stopWorkers()
	d.wg.Wait()
	d.say("summary:\n" +
		fmt.Sprintf("    first election             %v\n", round(tm.first)) +
		fmt.Sprintf("    takeover after a crash     %v (lease %v)\n", round(tm.takeover), d.lease) +
		fmt.Sprintf("    handover after a Resign    %v", round(tm.handover)))
	return ctx.Err()
}

// startElection starts the observer, which prints every new leader, and
// the workers, each with a client of its own. They run until ctx ends;
// d.wg joins them.
func (d *demo) startElection(ctx context.Context) error {
	observer, err := d.newClient("observer")
	if err != nil {
		return err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for l := range observer.NewElection(demoElection).Observe(ctx) {
			d.say("  observer: the leader is now %s, at %s", safeText(l.Owner, 0), preview(l.Value))
		}
	}()
	for i := range d.workers {
		c, err := d.newClient(fmt.Sprintf("worker-%d", i+1))
		if err != nil {
			return err
		}
		w := &worker{d: d, name: fmt.Sprintf("worker-%d", i+1), value: fmt.Sprintf("10.0.0.%d:8080", i+1),
			e: c.NewElection(demoElection)}
		d.wg.Add(1)
		go w.loop(ctx)
	}
	return nil
}

// scenario waits for the first leader, crashes it, waits for its
// successor, makes that one resign and waits for the next, letting each
// leader work a little. It returns how long each change took.
func (d *demo) scenario(ctx context.Context, began time.Time) (timings, error) {
	var tm timings
	ev, err := d.next(ctx)
	if err != nil {
		return tm, err
	}
	tm.first = ev.at.Sub(began)
	d.pause(ctx)

	ev, tm.takeover, err = d.order(ctx, d.kill, "crash")
	if err != nil {
		return tm, err
	}
	d.say("==> %s took over %v after the crash (lease %v): a follower waits one lease from the last heartbeat it saw",
		ev.worker, round(tm.takeover), d.lease)
	d.pause(ctx)

	ev, tm.handover, err = d.order(ctx, d.resign, "resign")
	if err != nil {
		return tm, err
	}
	d.say("==> %s took over %v after the leader began to resign: the release woke it at once", ev.worker, round(tm.handover))
	d.pause(ctx)
	return tm, nil
}

// order gives the current leader an order (crash or resign), waits for the
// next leader, and returns its election and how long after the order it
// came.
func (d *demo) order(ctx context.Context, order chan<- struct{}, what string) (event, time.Duration, error) {
	at, err := d.send(ctx, order, what)
	if err != nil {
		return event{}, 0, err
	}
	ev, err := d.next(ctx)
	if err != nil {
		return event{}, 0, err
	}
	return ev, ev.at.Sub(at), nil
}

// demoElection is the name of the demo's election.
const demoElection = "demo-leader"

// next waits for a worker to win the election.
func (d *demo) next(ctx context.Context) (event, error) {
	t := time.NewTimer(3*d.lease + 30*time.Second)
	defer t.Stop()
	select {
	case ev := <-d.events:
		return ev, nil
	case <-ctx.Done():
		return event{}, ctx.Err()
	case <-t.C:
		return event{}, errors.New("no worker was elected")
	}
}

// pause lets the leader work for three ticks.
func (d *demo) pause(ctx context.Context) {
	t := time.NewTimer(3*d.tick() + d.tick()/2)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// send hands an order to the current leader and returns when it took it.
func (d *demo) send(ctx context.Context, order chan<- struct{}, what string) (time.Time, error) {
	t := time.NewTimer(3*d.lease + 30*time.Second)
	defer t.Stop()
	select {
	case order <- struct{}{}:
		return time.Now(), nil
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-t.C:
		return time.Time{}, fmt.Errorf("no leader took the order to %s", what)
	}
}

// tick is how often the leader works.
func (d *demo) tick() time.Duration { return d.lease / 5 }

// round rounds d for reading: to 10ms above a second, to 0.1ms below.
func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}
