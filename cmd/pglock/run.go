package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"

	"cirello.io/pglock"
)

// runOptions are the arguments of pglock run.
type runOptions struct {
	name                  string   // the lock
	argv                  []string // the command
	try                   bool
	permits               int // > 0: hold one permit of the semaphore name
	timeout, lease, grace time.Duration
}

// parseRun reads run's arguments: flags, the lock's name, then the command
// (after "--", or from the first argument that is not a flag).
func parseRun(g *globals, args []string) (runOptions, error) {
	var o runOptions
	fs := g.flagSet("run")
	fs.BoolVar(&o.try, "try", false, "exit at once with status 122 if the lock is held")
	durationVar(fs, &o.timeout, "timeout", 0, 0, false, "give up waiting for the lock after this long, with status 124 (0: wait forever)")
	durationVar(fs, &o.lease, "lease", pglock.DefaultLeaseDuration, pglock.MinLeaseDuration, true, "lease; every client of the lock must use the same")
	fs.IntVar(&o.permits, "permits", 0, fmt.Sprintf("hold one of N permits of the semaphore NAME, up to %d, instead of the lock NAME (0: the lock); every client of NAME must use the same N", pglock.MaxPermits))
	durationVar(fs, &o.grace, "grace", 10*time.Second, 0, false, "after the lock is lost, how long the command has between SIGTERM and SIGKILL")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() == 0 || afterDashDash(args, fs.Args()) {
		return o, errors.New("run needs a lock NAME before the command")
	}
	o.name, args = fs.Arg(0), fs.Args()[1:]
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.argv = fs.Args()
	switch {
	case len(o.argv) == 0:
		return o, errors.New("run needs a command: pglock run NAME -- CMD [ARGS...]")
	case o.permits < 0 || o.permits > pglock.MaxPermits:
		return o, fmt.Errorf("invalid value %d for flag --permits: want 0 (a lock) or 1 to %d permits", o.permits, pglock.MaxPermits)
	}
	return o, nil
}

// cmdRun holds the named lock while a command runs. It exits with the
// command's status, or with one of the statuses of main.go when the lock
// is held (--try), lost, not acquired in time, or when pglock fails.
// Whichever way it ends, it releases the lock and stops its client within
// --exit-timeout.
func cmdRun(_ context.Context, g *globals, args []string) int {
	o, err := parseRun(g, args)
	if err != nil {
		return g.usageError(err)
	}
	// Signals are caught from now on: while waiting they stop the wait, and
	// while the command runs they are passed on to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	r := &runner{g: g, runOptions: o, sigs: sigs}
	if status, ok := r.lock(); !ok {
		return status
	}
	return r.execute()
}

// runner is one pglock run: what it holds, and the signals it caught.
type runner struct {
	g *globals
	runOptions
	sigs <-chan os.Signal

	db *sql.DB
	c  *pglock.Client
	l  *pglock.Lock // nil until acquired
	// token is l's record version number when it was acquired: the
	// command's fencing token. Heartbeats raise the lock's number later,
	// but every number a successor gets is larger still.
	token int64
}

// lock connects and acquires the lock; until it returns, a signal stops the
// connection or the wait. When the lock was not acquired it reports why,
// stops everything it opened and returns the exit status and false.
func (r *runner) lock() (status int, ok bool) {
	waitCtx, stopWatching := watchSignals(r.sigs)
	defer stopWatching()
	host, _ := os.Hostname()
	db, c, err := r.g.client(waitCtx,
		pglock.WithLeaseDuration(r.lease),
		pglock.WithHeartbeatFrequency(r.lease/4),
		pglock.WithOwner(fmt.Sprintf("%s/%d", safeText(host, 200), os.Getpid())))
	if err != nil {
		if sig := stopWatching(); sig != nil {
			return signalStatus(sig), false
		}
		return r.g.fail(exitError, "%v", err), false
	}
	r.db, r.c = db, c
	l, err := acquire(waitCtx, c, r.name, r.permits, r.try, r.timeout)
	if err == nil {
		r.l, r.token = l, l.RecordVersionNumber()
	}
	if sig := stopWatching(); sig != nil {
		r.finish(false)
		return signalStatus(sig), false
	}
	if err != nil {
		status := r.acquireFailure(err)
		r.finish(false)
		return status, false
	}
	return exitOK, true
}

// acquireFailure reports why the lock was not acquired and returns the exit
// status that says so.
func (r *runner) acquireFailure(err error) int {
	name := safeText(r.name, 0)
	switch {
	case r.try && heldByOther(err) && r.permits > 0:
		return r.g.fail(exitHeld, "all %d permits of semaphore %q are held by others", r.permits, name)
	case r.try && heldByOther(err):
		return r.g.fail(exitHeld, "lock %q is held by someone else", name)
	case errors.Is(err, context.DeadlineExceeded) && r.permits > 0:
		return r.g.fail(exitTimeout, "no permit of semaphore %q acquired within %v", name, r.timeout)
	case errors.Is(err, context.DeadlineExceeded):
		return r.g.fail(exitTimeout, "lock %q not acquired within %v", name, r.timeout)
	}
	return r.g.fail(exitError, "%v", r.g.explain(err))
}

// heldByOther reports whether err, of an acquisition with FailIfLocked,
// means that the lock is held. Every failed acquisition wraps
// ErrNotAcquired; one that failed on the database, on the name, or on its
// context wraps that reason as well.
func heldByOther(err error) bool {
	var (
		pqErr       *pq.Error
		unavailable *pglock.UnavailableError
	)
	return errors.Is(err, pglock.ErrNotAcquired) &&
		!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) &&
		!errors.As(err, &pqErr) && !errors.As(err, &unavailable) &&
		!errors.Is(err, pglock.ErrInvalidName) && !errors.Is(err, pglock.ErrInvalidTableName) &&
		!errors.Is(err, pglock.ErrPermitsMismatch) &&
		!errors.Is(err, pglock.ErrClosed)
}

// execute runs the command under the lock, with the lock's name and
// fencing token in its environment (see commandEnv), passes signals on to
// it, and ends it when the lock is lost. It then releases the lock and
// stops the client, and returns pglock run's exit status.
func (r *runner) execute() int {
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = commandEnv(r.name, r.token)
	if err := cmd.Start(); err != nil {
		r.finish(false)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return r.g.fail(exitNoCommand, "cannot run %q: %v", r.argv[0], err)
		}
		return r.g.fail(exitCannotExec, "cannot run %q: %v", r.argv[0], err)
	}
	lost := r.supervise(cmd)
	r.finish(lost)
	if lost {
		return exitLost
	}
	return exitStatus(cmd.ProcessState)
}

// supervise waits for the started cmd to exit. Meanwhile it passes the
// signals pglock gets on to cmd, and when the lock is lost it sends cmd
// SIGTERM, then SIGKILL after --grace. It reports whether the lock was
// lost.
func (r *runner) supervise(cmd *exec.Cmd) (lost bool) {
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the status is read from cmd.ProcessState
		close(exited)
	}()
	lockDone := r.l.Done()
	var kill <-chan time.Time
	for {
		select {
		case sig := <-r.sigs:
			_ = cmd.Process.Signal(sig)
		case <-lockDone:
			lockDone, lost = nil, true
			fmt.Fprintf(r.g.stderr, "pglock: lock %q lost (%v): sending SIGTERM to %s (pid %d)\n",
				safeText(r.name, 0), r.l.Err(), safeText(r.argv[0], 0), cmd.Process.Pid)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			kill = time.After(r.grace)
		case <-kill:
			kill = nil
			fmt.Fprintf(r.g.stderr, "pglock: %s (pid %d) still runs %v after SIGTERM: sending SIGKILL\n",
				safeText(r.argv[0], 0), cmd.Process.Pid, r.grace)
			_ = cmd.Process.Kill()
		case <-exited: // the goroutine above has returned
			return lost
		}
	}
}

// finish releases the lock, if it was acquired, and stops the client, all
// within --exit-timeout whatever the network does. A lock that was lost is
// released only to stop its heartbeat: its row is no longer ours. A lock
// that cannot be released is left to expire a lease after its last
// heartbeat.
func (r *runner) finish(lost bool) {
	ctx, cancel := r.g.exitContext()
	defer cancel()
	switch {
	case r.l != nil && lost:
		_ = r.c.ReleaseContext(ctx, r.l)
	case r.l != nil:
		release(ctx, r.g, r.c, r.l)
	}
	r.g.shutdown(ctx, r.db, r.c)
}

// signalStatus is the exit status of pglock ended by sig.
func signalStatus(sig os.Signal) int {
	return exitSignal + int(sig.(syscall.Signal))
}

// watchSignals returns a context cancelled when a signal arrives on sigs,
// and a function that stops watching and returns that signal, or nil.
func watchSignals(sigs <-chan os.Signal) (context.Context, func() os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	var caught os.Signal
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case caught = <-sigs:
			cancel()
		case <-stop:
		}
	}()
	return ctx, sync.OnceValue(func() os.Signal {
		close(stop)
		<-stopped
		cancel()
		return caught
	})
}

// acquire takes the lock, or one of permits permits of the semaphore name
// when permits > 0, without waiting with try, and giving up after timeout
// if positive or when ctx ends. The lock's heartbeat outlives ctx.
func acquire(ctx context.Context, c *pglock.Client, name string, permits int, try bool, timeout time.Duration) (*pglock.Lock, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	opts := []pglock.LockOption{pglock.WithCustomHeartbeatContext(context.Background())}
	if try {
		opts = append(opts, pglock.FailIfLocked())
	}
	if permits > 0 {
		return c.NewSemaphore(name, permits).Acquire(ctx, opts...)
	}
	return c.AcquireContext(ctx, name, opts...)
}

// release releases l within ctx, warning when it cannot: the lock then
// expires a lease after its last heartbeat.
func release(ctx context.Context, g *globals, c *pglock.Client, l *pglock.Lock) {
	if err := c.ReleaseContext(ctx, l); err != nil {
		g.warn("cannot release %q: %v", safeText(l.Name(), 0), err)
	}
}

// exitStatus is the shell's view of how a process ended: its exit status,
// or 128 + the signal that killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignal + int(ws.Signal())
	}
	return ps.ExitCode()
}
