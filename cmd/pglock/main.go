// Command pglock runs commands under distributed locks kept in PostgreSQL,
// inspects those locks, and maintains their table. It uses the tables of
// cirello.io/pglock, so it shares locks with programs that use the library.
//
//	pglock [--dsn DSN] [--table TABLE] [--exit-timeout D] COMMAND [ARGS]
//
// # Commands
//
// init creates the lock table and its record version number sequence where
// they are missing, as the library's TryCreateTable does: new tables keep
// half of each page free (fillfactor 50) so that heartbeats stay HOT
// updates.
//
// ls [--all] [--json] lists the held locks: name, owner, record version
// number (RVN) and a preview of the data. --all adds the rows released
// with KeepOnRelease; --json prints JSON. Text meant for a terminal is made
// safe: control characters and escape sequences become dots.
//
// get NAME [--json] [--data] shows one lock; --data writes its raw data to
// stdout and nothing else. It exits 1 when there is no such lock; a row
// kept with KeepOnRelease is shown as released, with status 0.
//
// run NAME [--try] [--permits N] [--timeout D] [--lease D] [--grace D] [--] CMD [ARGS...]
// acquires the lock (with --permits N, one of N permits of the semaphore
// NAME), runs CMD while holding it, releases it when CMD exits, and exits
// with CMD's status. CMD starts at "--", or at the first argument
// after NAME that is not one of run's flags; write "--" when CMD starts
// with "-". CMD gets pglock's stdin, stdout and stderr, and the SIGINT and
// SIGTERM pglock receives. When the lock is lost while CMD runs (its
// heartbeats failed for a whole lease, or an operator broke it with
// release --force) CMD gets SIGTERM, then SIGKILL --grace later (default
// 10s), and pglock exits 123. --try exits 122 at once when the lock is
// held; --timeout gives up waiting after D with 124. Every client of a lock
// must use the same --lease (default 20s, at least 100ms); heartbeats run
// every quarter lease.
//
// release NAME --force deletes a lock's row whoever holds it: the
// operator's override for a holder known to be dead. Its holder goes on
// believing it holds the lock until its next heartbeat, so it refuses
// without --force.
//
// tune [--apply] [--rewrite] [--lock-timeout D] reports the lock table's
// fillfactor, its size and its indexes' size, its rows, and the share of
// its updates that were HOT (heap-only tuple updates, which leave the
// indexes alone and let pages clean up after themselves) since the
// statistics were reset. Tables made by older versions of pglock have the
// default fillfactor, 100: as pages fill up, heartbeats stop being HOT and
// the table grows. --apply runs ALTER TABLE ... SET (fillfactor = 50),
// which does not block the lock's users and applies to pages as they are
// rewritten. --rewrite does that and then VACUUM FULL, which rewrites every
// page at once but holds an exclusive lock on the table while it runs:
// meanwhile no lock can be acquired, released or heartbeated, so run it
// when the table is small or quiet. Both wait at most --lock-timeout
// (default 5s) for the table, and fail rather than queue every heartbeat
// behind them.
//
// demo [--lease D] [--workers N] shows a leader election live: workers
// elect a leader, the leader crashes, a follower takes over a lease later,
// and the next leader resigns and hands over at once. It works in a table
// of its own, which it creates and drops, and without --dsn or $PGLOCK_DSN
// it starts a throwaway PostgreSQL, which it removes.
//
// help prints the usage.
//
// # Connection and flags
//
// The server is given by --dsn, else $PGLOCK_DSN, else libpq's PG*
// variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE...).
// No message shows the DSN, its password, $PGPASSWORD, or the piece of the
// DSN a driver quotes in its error: each is replaced by "[redacted]". A
// server that does not answer within 15 seconds of the first connection
// attempt is given up on (exit status 125); pglock then leaves within
// --exit-timeout, warning about the connection attempt it leaves behind.
// --table names the lock table (default "locks"; an empty name is an
// error); it may be schema-qualified ("myschema.locks") and quoted
// (`"My Locks"`), and is read as the library reads it, so that no name can
// change the SQL pglock sends. Global flags may also follow the command. A
// bad flag value is reported with the flag, the value and the form
// expected: durations take a unit, as in 5s.
//
// # Leaving within a bound
//
// Every command that connects leaves within --exit-timeout (default 5s)
// once its work is done, it failed, or a signal stopped it, even when the
// server or the network stopped answering: run releases its lock, the lock
// client stops its heartbeats and its own connections, and the connections
// are closed, all under that one deadline. What did not finish in time is
// reported as a warning and left behind as pglock exits: a lock whose row
// could not be freed has ended, and its row expires a lease after its last
// heartbeat, as when a holder dies. The exit status is not changed by such
// a warning: run still exits with its command's status.
//
// # Exit statuses
//
//	0      success; run: the command's own status otherwise
//	1      get, release: no such lock
//	122    run --try: the lock is held
//	123    run: the lock was lost; the command got SIGTERM (SIGKILL after --grace)
//	124    run: --timeout passed before the lock was acquired
//	125    usage error, bad DSN, unreachable server, missing table, other failure
//	126    run: the command could not be executed
//	127    run: the command was not found
//	128+N  ended by signal N
//
// run's own statuses sit where shells and timeout(1) keep them for the same
// purposes, so that they are told apart from most commands' own.
package main

import (
	"cirello.io/pglock/internal/bounded"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Exit statuses. `pglock run` exits with its command's status, so its own
// statuses sit in the range shells and timeout(1) keep for the same purposes.
const (
	exitOK         = 0
	exitAbsent     = 1   // get, release: no such lock
	exitHeld       = 122 // run --try: the lock is held by someone else
	exitLost       = 123 // run: the lock was lost while the command ran
	exitTimeout    = 124 // run --timeout: the lock was not acquired in time
	exitError      = 125 // usage, connection, missing table, any other pglock failure
	exitCannotExec = 126 // run: the command could not be executed
	exitNoCommand  = 127 // run: the command was not found
	exitSignal     = 128 // + N: pglock or the command ended by signal N
)

const usage = `usage: pglock [--dsn DSN] [--table TABLE] [--exit-timeout D] COMMAND [ARGS]

Commands:
  init                 create the lock table, its sequence and its fair queue
                       where they are missing (adds the queue to an existing table)
  ls [--all] [--json]  list the held locks (--all: released rows kept too)
  get NAME [--json] [--data]
                       show one lock (--data: write its raw data to stdout)
  run NAME [--try] [--permits N] [--timeout D] [--lease D] [--grace D] [--] CMD [ARGS...]
                       hold the lock (--permits: one of N permits) while CMD runs
  release NAME --force delete a lock row whoever holds it (operator override)
  tune [--apply] [--rewrite] [--lock-timeout D]
                       report the table's fillfactor, size and share of HOT
                       updates; --apply sets fillfactor 50 so that heartbeats
                       stay HOT; --rewrite also runs VACUUM FULL, which locks
                       the table (no acquire, release or heartbeat) while it
                       runs; each waits at most --lock-timeout (5s) for the table
  demo [--lease D] [--workers N]
                       leader election demo; starts its own PostgreSQL when
                       no DSN is given
  help                 print this text

Connection: --dsn, else $PGLOCK_DSN, else libpq's PG* variables (PGHOST,
PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE...). --table defaults to
"locks" and may be schema-qualified. Global flags may also follow the
command.

Exit: every command that connects releases what it holds, stops its client
and disconnects within --exit-timeout (default 5s), even when the server
stops answering; what is left (a lock that could not be released expires a
lease after its last heartbeat) is reported as a warning.

Exit statuses:
  0    success; run: the command's own status otherwise
  1    get, release: no such lock
  122  run --try: the lock is held
  123  run: the lock was lost; the command got SIGTERM (SIGKILL after --grace)
  124  run: --timeout passed before the lock was acquired
  125  usage error, bad DSN, unreachable server, missing table, other failure
  126  run: the command could not be executed
  127  run: the command was not found
  128+N  ended by signal N
`

// globals are the flags every command takes, and where it writes.
type globals struct {
	dsn, table     string
	exitTimeout    time.Duration
	stdout, stderr io.Writer
	calls          *bounded.Runner // driver calls, bounded by their contexts

	exitOnce sync.Once // sets exitBy when the exit path begins
	exitBy   time.Time // the exit path's deadline
}

// command is one subcommand: it returns the exit status.
type command func(ctx context.Context, g *globals, args []string) int

var commands = map[string]command{
	"init":    cmdInit,
	"ls":      cmdLs,
	"get":     cmdGet,
	"run":     cmdRun,
	"release": cmdRelease,
	"tune":    cmdTune,
	"demo":    cmdDemo,
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command line args and returns the exit status.
func realMain(args []string, stdout, stderr io.Writer) int {
	g := &globals{exitTimeout: defaultExitTimeout, stdout: stdout, calls: newCalls()}
	g.stderr = secretWriter{w: stderr, g: g}
	fs := g.flagSet("pglock")
	if err := fs.Parse(args); err != nil {
		return g.usageError(err)
	}
	if fs.NArg() == 0 {
		return g.usageError(errors.New("missing command"))
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		return g.usageError(fmt.Errorf("unknown command %q", name))
	}
	ctx := context.Background()
	if name != "run" && name != "demo" { // they handle SIGINT and SIGTERM themselves
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	status := cmd(ctx, g, rest)
	g.joinCalls()
	return status
}

// flagSet returns a flag set holding the global flags.
func (g *globals) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.dsn, "dsn", g.dsn, "PostgreSQL connection string")
	fs.Var(tableFlag{&g.table}, "table", "lock table")
	durationVar(fs, &g.exitTimeout, "exit-timeout", g.exitTimeout, 0, true, "bound on releasing, stopping and disconnecting at exit")
	return fs
}

// usageError reports a usage error and returns its status; -h and --help
// print the usage and succeed.
func (g *globals) usageError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(g.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(g.stderr, "pglock: %s\nRun `pglock help` for usage.\n", unprefixed(flagError(err).Error()))
	return exitError
}

// fail reports an error and returns status.
func (g *globals) fail(status int, format string, args ...any) int {
	fmt.Fprintf(g.stderr, "pglock: %s\n", unprefixed(fmt.Sprintf(format, args...)))
	return status
}

// unprefixed drops the "pglock: " the library's errors start with, where
// pglock's own message starts with it already or puts it after a colon.
func unprefixed(msg string) string {
	return strings.ReplaceAll(strings.TrimPrefix(msg, "pglock: "), ": pglock: ", ": ")
}

// parseArgs parses fs's flags wherever they stand among args and returns the
// other arguments. Everything after "--" is taken as it is.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if afterDashDash(args, rest) {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// afterDashDash reports whether fs.Parse(args) stopped because of "--".
func afterDashDash(args, rest []string) bool {
	i := len(args) - len(rest) - 1
	return i >= 0 && args[i] == "--"
}
