package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// BenchmarkSoakManyProcesses holds 100,000 locks across 4 worker processes
// (25,000 each, every process its own client and pool) with a 1 s
// heartbeat and a 10 s lease for 60 s, on a table made by CreateTable. It
// fails if any process lost a lock, and reports the figures of
// BenchmarkSoak (see soakResult.report), the statements per second the
// server served above all. The workers are this test binary run again with
// PGLOCK_SOAK_WORKER set (see soakWorkerMain); the benchmark waits for each,
// and kills any that outlives it. The soak runs once, whatever b.N.
//
// Without PGLOCK_SOAK=1 it is a smoke test: 400 locks held for 1 s. The
// full soak:
//
//	PGLOCK_SOAK=1 go test -count=1 -timeout 30m -run '^$' -bench '^BenchmarkSoakManyProcesses$' -benchtime 1x ./internal/bench
//
// PGLOCK_SOAK_DURATION, PGLOCK_SOAK_MANY_LOCKS, PGLOCK_SOAK_MANY_PROCS,
// PGLOCK_SOAK_MANY_HEARTBEAT and PGLOCK_SOAK_MANY_LEASE override the
// parameters; PGLOCK_SOAK_LOG=1 has the workers' clients log to their
// stderr, which the benchmark prints.
func BenchmarkSoakManyProcesses(b *testing.B) {
	cfg := loadSoakConfig(b, envManyPrefix,
		soakConfig{duration: 60 * time.Second, locks: 100_000, heartbeat: time.Second, lease: 10 * time.Second, procs: 4},
		soakConfig{duration: time.Second, locks: 400, heartbeat: time.Second, lease: 10 * time.Second, procs: 4})
	r := runManySoak(b, cfg)
	r.name = fmt.Sprintf("%d processes", cfg.procs)
	// b.Loop makes the testing package call this function once, whatever
	// -benchtime: the soak above is the measurement.
	for b.Loop() {
	}
	b.ReportMetric(float64(cfg.procs), "procs")
	r.report(b)
}

// runManySoak runs the soak of cfg across cfg.procs worker processes.
func runManySoak(b *testing.B, cfg soakConfig) soakResult {
	b.Helper()
	app := soakAppName()
	mon := newMonitor(b, app)
	mon.table = createSoakTable(b, mon.db)
	r := soakResult{cfg: cfg, fillfactor: mon.fillfactor(b)}
	ws := startWorkers(b, cfg, dsnWith(srv.DSN(), "application_name", app), mon.table)
	ready, err := awaitReports(ws, "ready", cfg.acquireTimeout())
	if err != nil {
		b.Fatal(err)
	}
	for _, rep := range ready {
		r.acquireTime = max(r.acquireTime, time.Duration(rep.Acquire*float64(time.Second)))
	}
	time.Sleep(cfg.settle())
	r.start = mon.mustRead(b)
	if err := holdWatching(ws, cfg.duration); err != nil {
		b.Fatal(err)
	}
	r.end = mon.mustRead(b)
	for _, w := range ws {
		_ = w.stdin.Close() // stop: release and report
	}
	done, err := awaitReports(ws, "done", cfg.acquireTimeout())
	if err != nil {
		b.Fatal(err)
	}
	r.collect(b, ws, done)
	for _, w := range ws {
		if err := w.wait(); err != nil {
			b.Fatal(err)
		}
		if os.Getenv(envSoakLog) == "1" {
			b.Logf("worker %d log:\n%s", w.cfg.ID, w.stderr.Bytes())
		}
	}
	if r.final, err = mon.final(b.Context(), r.beatsTotal); err != nil {
		b.Fatal(err)
	}
	return r
}

// collect adds the "done" reports of the workers to r, and fails b for a
// worker that did not hold all its locks or whose release failed.
func (r *soakResult) collect(b *testing.B, ws []*workerProc, done []workerReport) {
	b.Helper()
	for i, rep := range done {
		if rep.Acquired != ws[i].cfg.Count {
			b.Errorf("worker %d held %d locks, want %d", rep.ID, rep.Acquired, ws[i].cfg.Count)
		}
		if rep.Failed != "" {
			b.Errorf("worker %d: %s", rep.ID, rep.Failed)
		}
		r.beatsPerSec += float64(rep.Beats) / rep.Held
		r.beatsTotal += rep.BeatsTotal
		r.beatFails += rep.BeatFails
		r.lost += rep.Lost
		for why, n := range rep.LostWhy {
			if r.lostWhy == nil {
				r.lostWhy = map[string]int64{}
			}
			r.lostWhy[why] += n
		}
	}
}

// workerProc is one worker process and the goroutine that reads its
// reports: that goroutine owns the process, waits for it, and ends when
// its stdout does.
type workerProc struct {
	cfg     workerConfig
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	reports chan workerReport // closed at the end of stdout
	stderr  bytes.Buffer      // read only after done
	done    chan struct{}     // closed once the process was waited for
	err     error             // how it exited, set before done closes
}

// startWorkers starts cfg.procs workers sharing cfg.locks names. Whatever
// happens, none outlives b: the cleanup closes their stdin (their stop
// signal), and kills those still running after 30 s.
func startWorkers(b *testing.B, cfg soakConfig, dsn, table string) []*workerProc {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ws := make([]*workerProc, 0, cfg.procs)
	b.Cleanup(func() {
		for _, w := range ws {
			w.stop(30 * time.Second)
		}
	})
	for i := range cfg.procs {
		first, next := cfg.locks*i/cfg.procs, cfg.locks*(i+1)/cfg.procs
		w, err := startWorker(exe, workerConfig{
			ID: i, DSN: dsn, Table: table, First: first, Count: next - first,
			Heartbeat: cfg.heartbeat, Lease: cfg.lease, AcquireTimeout: cfg.acquireTimeout(),
			MaxLife: 2*cfg.acquireTimeout() + cfg.duration + 10*time.Minute,
		})
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
	}
	return ws
}

func startWorker(exe string, cfg workerConfig) (*workerProc, error) {
	spec, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("worker %d: %w", cfg.ID, err)
	}
	w := &workerProc{cfg: cfg, cmd: exec.Command(exe), reports: make(chan workerReport, 4), done: make(chan struct{})}
	w.cmd.Env = append(os.Environ(), envSoakWorker+"="+string(spec))
	w.cmd.Stderr = &w.stderr
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("worker %d: %w", cfg.ID, err)
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("worker %d: %w", cfg.ID, err)
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("worker %d: %w", cfg.ID, err)
	}
	go w.read(stdout)
	return w, nil
}

// read passes the worker's reports on until its stdout ends, then waits for
// the process. Lines that are not reports, and reports beyond the channel's
// room, are dropped: a worker prints two.
func (w *workerProc) read(stdout io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var r workerReport
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		select {
		case w.reports <- r:
		default:
		}
	}
	close(w.reports)
	_, _ = io.Copy(io.Discard, stdout) // after a scan error, so that Wait does not block on the pipe
	w.err = w.cmd.Wait()
}

// wait waits for the worker to exit and returns its failure, if any.
func (w *workerProc) wait() error {
	<-w.done
	if w.err != nil {
		return fmt.Errorf("worker %d: %w: %s", w.cfg.ID, w.err, w.stderr.Bytes())
	}
	return nil
}

// stop closes the worker's stdin and waits for it to exit, killing it
// after grace.
func (w *workerProc) stop(grace time.Duration) {
	_ = w.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-w.done:
		return
	case <-t.C:
	}
	_ = w.cmd.Process.Kill()
	<-w.done
}

// awaitReports returns the next report of each worker, which must be of
// event, within timeout.
func awaitReports(ws []*workerProc, event string, timeout time.Duration) ([]workerReport, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	reps := make([]workerReport, len(ws))
	for i, w := range ws {
		select {
		case r, ok := <-w.reports:
			switch {
			case !ok:
				return nil, fmt.Errorf("worker %d ended before reporting %q: %w", w.cfg.ID, event, orExited(w.wait()))
			case r.Event != event:
				return nil, fmt.Errorf("worker %d reported %q, want %q", w.cfg.ID, r.Event, event)
			}
			reps[i] = r
		case <-t.C:
			return nil, fmt.Errorf("worker %d did not report %q within %v", w.cfg.ID, event, timeout)
		}
	}
	return reps, nil
}

// holdWatching waits d, and fails as soon as a worker ends meanwhile.
func holdWatching(ws []*workerProc, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	ended := make(chan *workerProc, len(ws))
	stopWatching := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stopWatching); wg.Wait() }()
	for _, w := range ws {
		wg.Go(func() { // ends with the hold, or when w ends
			select {
			case <-w.done:
				ended <- w
			case <-stopWatching:
			}
		})
	}
	select {
	case <-t.C:
		return nil
	case w := <-ended:
		return fmt.Errorf("worker %d ended during the hold: %w", w.cfg.ID, orExited(w.wait()))
	}
}

// orExited is err, or an error saying the process exited cleanly.
func orExited(err error) error {
	if err == nil {
		return errors.New("it exited with status 0")
	}
	return err
}
