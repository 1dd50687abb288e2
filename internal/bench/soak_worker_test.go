package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"cirello.io/pglock"
)

// envSoakWorker, when set, makes the test binary a worker process of
// BenchmarkSoakManyProcesses instead of running tests: TestMain hands the
// variable's value, a JSON workerConfig, to soakWorkerMain.
const envSoakWorker = "PGLOCK_SOAK_WORKER"

// workerConfig is what a worker process is told to do.
type workerConfig struct {
	ID             int           `json:"id"`
	DSN            string        `json:"dsn"`
	Table          string        `json:"table"`
	First          int           `json:"first"` // its names are soakNames(First, Count)
	Count          int           `json:"count"`
	Heartbeat      time.Duration `json:"heartbeat"`
	Lease          time.Duration `json:"lease"`
	AcquireTimeout time.Duration `json:"acquire_timeout"`
	// MaxLife bounds the worker's life, should its parent neither stop it
	// nor die (a parent that dies closes the worker's stdin, which stops it).
	MaxLife time.Duration `json:"max_life"`
}

// workerReport is one line a worker prints on stdout: "ready" once it holds
// every lock, "done" once it released them and closed its client.
type workerReport struct {
	Event    string  `json:"event"`
	ID       int     `json:"id"`
	Acquired int     `json:"acquired"`
	Acquire  float64 `json:"acquire_seconds"` // time to acquire them all
	// The rest is in "done" only. Held is the time from "ready" to the stop,
	// Beats the heartbeats counted meanwhile; Lost the locks lost by then.
	Held       float64          `json:"held_seconds"`
	Beats      int64            `json:"beats"`
	Lost       int64            `json:"lost"`
	LostWhy    map[string]int64 `json:"lost_why,omitempty"` // by Lock.Err
	BeatsTotal int64            `json:"beats_total"`        // whole run, after Close
	BeatFails  int64            `json:"beat_fails"`
	Failed     string           `json:"failed,omitempty"` // what failed in the release or Close
}

// soakWorkerMain runs one worker process and returns its exit code. Its
// stdin is its stop signal: the worker holds its locks until stdin ends
// (the parent closed it, or died), then releases them, prints its "done"
// report and exits.
func soakWorkerMain(spec string) int {
	var cfg workerConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "soak worker: %s: %v\n", envSoakWorker, err)
		return 2
	}
	life, cancel := context.WithTimeout(context.Background(), cfg.MaxLife)
	defer cancel()
	stop, stopped := context.WithCancel(life)
	defer stopped()
	// The reader ends at the end of stdin, which also ends the process's
	// wait below; if MaxLife ends the process first, exiting ends it.
	go func() {
		defer stopped()
		_, _ = io.Copy(io.Discard, os.Stdin)
	}()
	if err := runWorker(life, stop, cfg, json.NewEncoder(os.Stdout)); err != nil {
		fmt.Fprintf(os.Stderr, "soak worker %d: %v\n", cfg.ID, err)
		return 1
	}
	return 0
}

// runWorker acquires the worker's locks, reports "ready", holds them until
// stop ends, releases them and reports "done". The client is closed, and
// the pool, before it returns.
func runWorker(life, stop context.Context, cfg workerConfig, out *json.Encoder) (err error) {
	db, err := sql.Open("postgres", cfg.DSN)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(soakReleasers + 2)
	db.SetMaxIdleConns(soakReleasers + 2)
	c, err := pglock.New(db, append(soakLogger(), pglock.WithCustomTable(cfg.Table), pglock.WithLeaseDuration(cfg.Lease),
		pglock.WithHeartbeatFrequency(cfg.Heartbeat), pglock.WithOwner(fmt.Sprintf("soak-worker-%d", cfg.ID)))...)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if cerr := c.Close(ctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close: %w", cerr))
		}
	}()
	actx, cancel := context.WithTimeout(stop, cfg.AcquireTimeout)
	defer cancel()
	t0 := time.Now()
	locks, err := acquireAll(actx, c, soakNames(cfg.First, cfg.Count))
	if err != nil {
		return err
	}
	closeIdle(db, soakReleasers+2) // their sessions end and report their counts
	rep := workerReport{ID: cfg.ID, Acquired: len(locks), Acquire: time.Since(t0).Seconds()}
	ready, beats := time.Now(), c.Stats().Heartbeats
	if err := emit(out, "ready", &rep); err != nil {
		return err
	}
	<-stop.Done()
	if life.Err() != nil {
		return fmt.Errorf("not stopped within %v: %w", cfg.MaxLife, life.Err())
	}
	st := c.Stats()
	rep.Held, rep.Beats = time.Since(ready).Seconds(), st.Heartbeats-beats
	rep.Lost, rep.LostWhy = lostLocks(locks)
	rep.Lost = max(rep.Lost, st.Lost)
	return finishWorker(c, locks, &rep, out)
}

// finishWorker releases the locks still held, closes the client and
// reports "done", with what failed meanwhile.
func finishWorker(c *pglock.Client, locks []*pglock.Lock, rep *workerReport, out *json.Encoder) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := releaseAll(ctx, c, locks)
	if cerr := c.Close(ctx); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close: %w", cerr))
	}
	if err != nil {
		rep.Failed = err.Error()
	}
	st := c.Stats()
	rep.BeatsTotal, rep.BeatFails = st.Heartbeats, st.HeartbeatFailures
	return emit(out, "done", rep)
}

func emit(out *json.Encoder, event string, rep *workerReport) error {
	rep.Event = event
	if err := out.Encode(rep); err != nil {
		return fmt.Errorf("report %s: %w", event, err)
	}
	return nil
}
