package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"cirello.io/pglock"
)

// releaseTimeout bounds the release after the command exits.
const releaseTimeout = 10 * time.Second

// cmdRun holds the named lock while a command runs. It exits with the
// command's status, or with one of the statuses of main.go when the lock
// is held (--try), lost, not acquired in time, or when pglock fails.
func cmdRun(_ context.Context, g *globals, args []string) int {
	fs := g.flagSet("run")
	try := fs.Bool("try", false, "exit at once with status 122 if the lock is held")
	timeout := fs.Duration("timeout", 0, "give up waiting for the lock after this long, with status 124 (0: wait forever)")
	lease := fs.Duration("lease", pglock.DefaultLeaseDuration, "lease; every client of the lock must use the same")
	grace := fs.Duration("grace", 10*time.Second, "after the lock is lost, how long the command has between SIGTERM and SIGKILL")
	if err := fs.Parse(args); err != nil {
		return g.usageError(err)
	}
	if fs.NArg() == 0 || afterDashDash(args, fs.Args()) {
		return g.usageError(errors.New("run needs a lock NAME before the command"))
	}
	name, args := fs.Arg(0), fs.Args()[1:]
	if err := fs.Parse(args); err != nil {
		return g.usageError(err)
	}
	argv := fs.Args()
	switch {
	case len(argv) == 0:
		return g.usageError(errors.New("run needs a command: pglock run NAME -- CMD [ARGS...]"))
	case *lease < 100*time.Millisecond, *timeout < 0, *grace < 0:
		return g.usageError(errors.New("--lease must be at least 100ms, --timeout and --grace not negative"))
	}

	// Signals are caught from now on: while waiting they stop the wait, and
	// while the command runs they are passed on to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	// Until the command starts, a signal stops the connection or the wait.
	waitCtx, stopWatching := watchSignals(sigs)
	host, _ := os.Hostname()
	db, c, err := g.client(waitCtx,
		pglock.WithLeaseDuration(*lease),
		pglock.WithHeartbeatFrequency(*lease/4),
		pglock.WithOwner(fmt.Sprintf("%s/%d", safeText(host, 200), os.Getpid())))
	if err != nil {
		if sig := stopWatching(); sig != nil {
			return exitSignal + int(sig.(syscall.Signal))
		}
		return g.fail(exitError, "%v", err)
	}
	defer db.Close()

	l, err := acquire(waitCtx, c, name, *try, *timeout)
	if sig := stopWatching(); sig != nil {
		if err == nil {
			release(g, c, l)
		}
		return exitSignal + int(sig.(syscall.Signal))
	}
	switch {
	case *try && errors.Is(err, pglock.ErrNotAcquired) && !errors.Is(err, context.DeadlineExceeded):
		return g.fail(exitHeld, "lock %q is held by someone else", safeText(name, 0))
	case errors.Is(err, context.DeadlineExceeded):
		return g.fail(exitTimeout, "lock %q not acquired within %v", safeText(name, 0), *timeout)
	case err != nil:
		return g.fail(exitError, "%v", g.explain(err))
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		release(g, c, l)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return g.fail(exitNoCommand, "cannot run %q: %v", argv[0], err)
		}
		return g.fail(exitCannotExec, "cannot run %q: %v", argv[0], err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the status is read from cmd.ProcessState
		close(exited)
	}()

	lockDone, lost := l.Done(), false
	var kill <-chan time.Time
	for running := true; running; {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig)
		case <-lockDone:
			lockDone, lost = nil, true
			fmt.Fprintf(g.stderr, "pglock: lock %q lost (%v): sending SIGTERM to %s (pid %d)\n",
				safeText(name, 0), l.Err(), safeText(argv[0], 0), cmd.Process.Pid)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			kill = time.After(*grace)
		case <-kill:
			kill = nil
			fmt.Fprintf(g.stderr, "pglock: %s (pid %d) still runs %v after SIGTERM: sending SIGKILL\n",
				safeText(argv[0], 0), cmd.Process.Pid, *grace)
			_ = cmd.Process.Kill()
		case <-exited:
			running = false
		}
	}
	if lost {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		_ = c.ReleaseContext(ctx, l) // stops the heartbeat; the row is not ours
		cancel()
		return exitLost
	}
	release(g, c, l)
	return exitStatus(cmd.ProcessState)
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

// acquire takes the lock, without waiting with try, and giving up after
// timeout if positive or when ctx ends. The lock's heartbeat outlives ctx.
func acquire(ctx context.Context, c *pglock.Client, name string, try bool, timeout time.Duration) (*pglock.Lock, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	opts := []pglock.LockOption{pglock.WithCustomHeartbeatContext(context.Background())}
	if try {
		opts = append(opts, pglock.FailIfLocked())
	}
	return c.AcquireContext(ctx, name, opts...)
}

// release releases l, warning when it cannot: the lock then expires a lease
// after its last heartbeat.
func release(g *globals, c *pglock.Client, l *pglock.Lock) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := c.ReleaseContext(ctx, l); err != nil {
		fmt.Fprintf(g.stderr, "pglock: warning: cannot release %q: %v\n", safeText(l.Name(), 0), err)
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
