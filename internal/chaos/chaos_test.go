package chaos_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/netfault"
)

// Chaos parameters. The figures in docs/safety.md come from runs of
// TestChaos with these values.
const (
	chaosWorkers   = 4
	chaosNames     = "a,b,sem:s:2" // two locks and a semaphore of 2 permits
	chaosSemaphore = "s"
	chaosPermits   = 2
	chaosLease     = time.Second
	chaosHeartbeat = 200 * time.Millisecond
	chaosDuration  = 25 * time.Second
)

// workerReport mirrors the worker's Report.
type workerReport struct {
	Worker        int `json:"worker"`
	Tenures       int `json:"tenures"`
	Writes        int `json:"writes"`
	RefusedHeld   int `json:"refused_held"`
	RefusedKnown  int `json:"refused_known"`
	WriteErrors   int `json:"write_errors"`
	AcquireErrors int `json:"acquire_errors"`
	ReleaseErrors int `json:"release_errors"`
}

// faultCounts are the faults the test injected.
type faultCounts struct {
	restarts, killed, pauses, blackholes, partitions atomic.Int64
}

// TestChaos runs several worker processes that compete for a few lock names
// and write to a ledger only through Guard, while the test kills their
// backends, stops and restarts the server, SIGSTOPs lock holders for longer
// than a lease, and cuts holders off the network (each worker reaches the
// server through its own fault-injecting proxy) for longer than a lease. It then proves from the ledger that no two tenures of
// one name ever interleaved their committed writes.
func TestChaos(t *testing.T) {
	if srv.External() {
		t.Skip("the chaos test stops the server: it needs a throwaway one")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	worker := buildWorker(t)

	db, err := sql.Open("postgres", srv.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	suffix := randomSuffix(t)
	table, ledger := "chaos_locks_"+suffix, "chaos_ledger_"+suffix
	c, err := pglock.New(db, pglock.WithCustomTable(table))
	require.NoError(t, err)
	require.NoError(t, c.CreateTable())
	t.Cleanup(func() { _ = c.DropTable() })
	_, err = db.Exec(`CREATE TABLE ` + ledger + ` (
		seq BIGSERIAL PRIMARY KEY,
		name TEXT NOT NULL,
		worker INT NOT NULL,
		tenure BIGINT NOT NULL,
		n INT NOT NULL,
		at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())`)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = db.Exec(`DROP TABLE ` + ledger) })

	// Start the workers.
	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	procs := make([]*proc, chaosWorkers)
	pids := make(map[int]bool)
	proxies := make(map[int]*netfault.Proxy)
	for i := range procs {
		proxy, err := netfault.Listen(srv.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = proxy.Close() })
		p := &proc{cmd: exec.Command(worker,
			"-dsn", strings.Replace(srv.DSN(), srv.Addr(), proxy.Addr(), 1), "-table", table, "-ledger", ledger, "-names", chaosNames,
			"-lease", chaosLease.String(), "-heartbeat", chaosHeartbeat.String(),
			"-duration", chaosDuration.String(), "-id", strconv.Itoa(i))}
		p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
		require.NoError(t, p.cmd.Start())
		procs[i] = p
		pids[p.cmd.Process.Pid] = true
		proxies[p.cmd.Process.Pid] = proxy
	}
	// Whatever happens, no worker stays stopped or outlives the test.
	t.Cleanup(func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
		}
	})

	// Inject faults while the workers run.
	var faults faultCounts
	ctx, cancel := context.WithTimeout(context.Background(), chaosDuration-2*time.Second)
	var wg sync.WaitGroup
	// Even when the test fails early, the injectors end (and the server is
	// up again) before it returns.
	defer func() { cancel(); wg.Wait() }()
	wg.Add(4)
	go func() { defer wg.Done(); killBackends(ctx, db, &faults) }()
	go func() { defer wg.Done(); restartServer(ctx, t, &faults) }()
	go func() { defer wg.Done(); pauseHolders(ctx, t, db, table, pids, &faults) }()
	go func() { defer wg.Done(); cutOffHolders(ctx, t, db, table, proxies, &faults) }()

	// Wait for the workers.
	var reports []workerReport
	for _, p := range procs {
		waited := make(chan error, 1)
		go func() { waited <- p.cmd.Wait() }()
		select {
		case err := <-waited:
			require.NoError(t, err, "worker failed: %s", p.stderr.String())
		case <-time.After(chaosDuration + 30*time.Second):
			_ = p.cmd.Process.Kill()
			t.Logf("killed worker: %v", <-waited)
			t.Fatalf("worker did not end: %s", p.stderr.String())
		}
		if p.stderr.Len() > 0 {
			t.Logf("worker stderr: %s", p.stderr.String())
		}
		var r workerReport
		sc := bufio.NewScanner(&p.stdout)
		require.True(t, sc.Scan(), "worker printed no report: %s", p.stderr.String())
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		reports = append(reports, r)
	}
	cancel()
	wg.Wait()

	// The server is up again (restartServer always restarts it); check.
	check := checkLedger(t, db, ledger)
	var sum workerReport
	for _, r := range reports {
		t.Logf("worker %d: %+v", r.Worker, r)
		sum.Tenures += r.Tenures
		sum.Writes += r.Writes
		sum.RefusedHeld += r.RefusedHeld
		sum.RefusedKnown += r.RefusedKnown
		sum.WriteErrors += r.WriteErrors
		sum.AcquireErrors += r.AcquireErrors
		sum.ReleaseErrors += r.ReleaseErrors
	}
	t.Logf("chaos: %d workers, names %s, lease %v, heartbeat %v, %v", chaosWorkers, chaosNames, chaosLease, chaosHeartbeat, chaosDuration)
	t.Logf("chaos: faults: %d server restarts, %d backends killed, %d holders SIGSTOPped for %v",
		faults.restarts.Load(), faults.killed.Load(), faults.pauses.Load(), pauseFor)
	t.Logf("chaos: holders cut off for %v: %d with their open connections blackholed, %d fully partitioned",
		cutOffFor, faults.blackholes.Load(), faults.partitions.Load())
	t.Logf("chaos: ledger: %d committed writes in %d tenures (%d tenures acquired); overlapping tenures: %d",
		check.rows, check.tenures, sum.Tenures, len(check.violations))
	t.Logf("chaos: stale writes refused by Guard: %d while the holder still believed it held the lock, %d after it knew it had lost it",
		sum.RefusedHeld, sum.RefusedKnown)
	t.Logf("chaos: other write failures %d, acquire failures %d, release failures %d",
		sum.WriteErrors, sum.AcquireErrors, sum.ReleaseErrors)

	require.Empty(t, check.violations, "two holders of one name committed writes in overlapping tenures")
	over := checkPermits(t, db, ledger, chaosSemaphore, chaosPermits)
	t.Logf("chaos: semaphore %q of %d permits: %d tenures wrote; most at once %d", chaosSemaphore, chaosPermits, over.tenures, over.most)
	require.Empty(t, over.violations, "more holders of the semaphore wrote at once than it has permits")
	require.Positive(t, over.tenures, "no permit holder wrote")
	require.Equal(t, int64(2), faults.restarts.Load(), "the server was not restarted twice")
	require.Positive(t, faults.killed.Load(), "no backend was killed")
	require.Positive(t, faults.pauses.Load(), "no holder was paused")
	require.Positive(t, faults.blackholes.Load(), "no holder's connections were blackholed")
	require.Positive(t, faults.partitions.Load(), "no holder was partitioned")
	require.GreaterOrEqual(t, check.tenures, 10, "too few tenures to prove anything")
	require.LessOrEqual(t, check.tenures, sum.Tenures)
	// How many stale writes Guard refuses is counted, not required: it
	// depends on where in its loop a SIGSTOP catches a holder (a holder
	// paused between tenures, or on its last write, wakes up with nothing
	// left to write), which the test does not control. Guard's refusal of a
	// stale write is asserted deterministically by the root package's
	// TestGuardRefusesAfterTakeover; here the proof is the ledger check.
	// Writes the workers saw commit are in the ledger (a commit whose
	// outcome was unknown may be there too, uncounted by its worker).
	require.GreaterOrEqual(t, check.rows, sum.Writes)
}

// ledgerCheck is what checkLedger found.
type ledgerCheck struct {
	rows, tenures int
	violations    []string
}

// checkLedger proves that for each name the committed writes of distinct
// tenures never interleave in ledger order. The order is the ledger's
// sequence, drawn inside each guarded transaction after Guard: a later
// tenure's writes can only draw numbers after the earlier tenure's last
// guarded transaction ended, so a tenure seen again after another one began
// is an overlap.
func checkLedger(t *testing.T, db *sql.DB, ledger string) ledgerCheck {
	t.Helper()
	rows, err := db.Query(`SELECT seq, name, worker, tenure FROM ` + ledger + ` ORDER BY name, seq`)
	require.NoError(t, err)
	defer rows.Close()
	type tenure struct {
		worker int
		id     int64
	}
	var (
		res      ledgerCheck
		lastName string
		current  tenure
		ended    map[tenure]bool
	)
	for rows.Next() {
		var (
			seq  int64
			name string
			ten  tenure
		)
		require.NoError(t, rows.Scan(&seq, &name, &ten.worker, &ten.id))
		res.rows++
		if name != lastName {
			lastName, current, ended = name, tenure{}, make(map[tenure]bool)
		}
		if ten == current {
			continue
		}
		if ended[ten] {
			res.violations = append(res.violations, fmt.Sprintf(
				"name %q: seq %d by worker %d tenure %d after tenure %d of worker %d began", name, seq, ten.worker, ten.id, current.id, current.worker))
		}
		if current != (tenure{}) {
			ended[current] = true
		}
		current = ten
		res.tenures++
	}
	require.NoError(t, rows.Err())
	return res
}

// permitCheck is what checkPermits found.
type permitCheck struct {
	tenures, most int
	violations    []string
}

// checkPermits proves that the writes of the tenures of the semaphore's
// permits (rows named sem#<i>) never span more than permits tenures at
// once in ledger order: each tenure's writes are guarded by its permit, so
// the span from its first write to its last lies within its holding.
func checkPermits(t *testing.T, db *sql.DB, ledger, sem string, permits int) permitCheck {
	t.Helper()
	rows, err := db.Query(`SELECT name, worker, tenure, min(seq), max(seq) FROM `+ledger+
		` WHERE name LIKE $1 GROUP BY name, worker, tenure`, sem+"#%")
	require.NoError(t, err)
	defer rows.Close()
	type edge struct {
		seq   int64
		delta int
	}
	var (
		res   permitCheck
		edges []edge
	)
	for rows.Next() {
		var (
			name           string
			worker         int
			tenure, lo, hi int64
		)
		require.NoError(t, rows.Scan(&name, &worker, &tenure, &lo, &hi))
		res.tenures++
		edges = append(edges, edge{lo, 1}, edge{hi + 1, -1})
	}
	require.NoError(t, rows.Err())
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.delta, b.delta)) })
	open := 0
	for _, e := range edges {
		open += e.delta
		res.most = max(res.most, open)
		if open > permits {
			res.violations = append(res.violations, fmt.Sprintf("%d tenures of semaphore %q wrote at once at seq %d", open, sem, e.seq))
		}
	}
	return res
}

// killBackends terminates every other client backend now and then.
func killBackends(ctx context.Context, db *sql.DB, f *faultCounts) {
	for sleepCtx(ctx, 700*time.Millisecond) {
		var n int64
		err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()`).Scan(&n)
		if err == nil {
			f.killed.Add(n)
		}
	}
}

// outageFor is how long each server stop lasts: longer than a lease, so
// every holder loses its lock.
const outageFor = 1500 * time.Millisecond

// restartServer stops the server for outageFor twice, a third and two thirds
// into the run.
func restartServer(ctx context.Context, t *testing.T, f *faultCounts) {
	t.Helper()
	step := (chaosDuration - 2*time.Second) / 3
	for range 2 {
		if !sleepCtx(ctx, step-outageFor) {
			return
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("stop: %v", err)
			return
		}
		time.Sleep(outageFor)
		if err := srv.Restart(); err != nil {
			t.Errorf("restart: %v", err)
			return
		}
		f.restarts.Add(1)
	}
}

// pauseFor is how long a paused holder stays stopped: well over a lease.
const pauseFor = 2500 * time.Millisecond

// pauseHolders SIGSTOPs a worker that holds a lock for pauseFor, then
// SIGCONTs it, every few seconds.
func pauseHolders(ctx context.Context, t *testing.T, db *sql.DB, table string, pids map[int]bool, f *faultCounts) {
	t.Helper()
	for sleepCtx(ctx, 2*time.Second) {
		pid := holderPID(ctx, db, table, pids)
		if pid == 0 {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Errorf("SIGSTOP %d: %v", pid, err)
			return
		}
		f.pauses.Add(1)
		time.Sleep(pauseFor)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("SIGCONT %d: %v", pid, err)
			return
		}
	}
}

// cutOffFor is how long a holder stays cut off the network: well over a
// lease.
const cutOffFor = 2 * time.Second

// cutOffHolders cuts a worker that holds a lock off the network for
// cutOffFor every few seconds, then heals its proxy, which delivers what it
// held back. In turn, the cut blackholes only the connections open then
// (new ones work: a NAT forgot them), or partitions the worker (nothing
// works).
func cutOffHolders(ctx context.Context, t *testing.T, db *sql.DB, table string, proxies map[int]*netfault.Proxy, f *faultCounts) {
	t.Helper()
	pids := make(map[int]bool, len(proxies))
	for pid := range proxies {
		pids[pid] = true
	}
	for sleepCtx(ctx, 1500*time.Millisecond) {
		pid := holderPID(ctx, db, table, pids)
		if pid == 0 {
			continue
		}
		proxy := proxies[pid]
		if (f.blackholes.Load()+f.partitions.Load())%2 == 0 {
			proxy.Blackhole()
			f.blackholes.Add(1)
		} else if _, err := proxy.Partition(); err != nil {
			t.Errorf("partition: %v", err)
			return
		} else {
			f.partitions.Add(1)
		}
		time.Sleep(cutOffFor)
		if err := proxy.Heal(); err != nil {
			t.Errorf("heal: %v", err)
			return
		}
	}
}

// holderPID returns the pid of a worker that holds a lock now, or 0.
func holderPID(ctx context.Context, db *sql.DB, table string, pids map[int]bool) int {
	rows, err := db.QueryContext(ctx, `SELECT owner FROM `+table+` WHERE record_version_number IS NOT NULL`)
	if err != nil {
		return 0
	}
	defer rows.Close()
	for rows.Next() {
		var owner string
		if rows.Scan(&owner) != nil {
			return 0
		}
		_, s, ok := strings.Cut(owner, "-pid-")
		if pid, err := strconv.Atoi(s); ok && err == nil && pids[pid] {
			return pid
		}
	}
	// A failed read finds no holder this time; the next round tries again.
	_ = rows.Err()
	return 0
}

// sleepCtx sleeps for d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// buildWorker builds the worker command into a temporary directory, with
// -race when this test runs with it.
func buildWorker(t *testing.T) string {
	t.Helper()
	// go test puts the go command it runs under first on the PATH.
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "worker")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, "cirello.io/pglock/internal/chaos/worker")...)
	cmd.Env = os.Environ()
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", msg)
	return out
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
