// Command pglock runs commands under distributed locks kept in PostgreSQL,
// and inspects those locks. It uses the tables of cirello.io/pglock, so it
// shares locks with programs that use the library.
//
//	pglock [--dsn DSN] [--table TABLE] COMMAND [ARGS]
//
// Run `pglock help` for the commands and the exit statuses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
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

const usage = `usage: pglock [--dsn DSN] [--table TABLE] COMMAND [ARGS]

Commands:
  init                 create the lock table if it is missing
  ls [--all] [--json]  list the held locks (--all: released rows kept too)
  get NAME [--json] [--data]
                       show one lock (--data: write its raw data to stdout)
  run NAME [--try] [--timeout D] [--lease D] [--grace D] -- CMD [ARGS...]
                       hold the lock while CMD runs
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

Connection: --dsn, else $PGLOCK_DSN, else libpq's PG* variables (PGHOST,
PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE...). --table defaults to
"locks". Global flags may also follow the command.

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
	calls          calls // driver calls that outlived their context
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
	g := &globals{exitTimeout: defaultExitTimeout, stdout: stdout, stderr: stderr}
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
	if name == "run" || name == "demo" {
		// They handle SIGINT and SIGTERM themselves.
		return cmd(context.Background(), g, rest)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd(ctx, g, rest)
}

// flagSet returns a flag set holding the global flags.
func (g *globals) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.dsn, "dsn", g.dsn, "PostgreSQL connection string")
	fs.StringVar(&g.table, "table", g.table, "lock table")
	fs.Var(positiveDuration{&g.exitTimeout}, "exit-timeout", "bound on releasing, stopping and disconnecting at exit")
	return fs
}

// positiveDuration is a flag holding a duration above zero.
type positiveDuration struct{ d *time.Duration }

// String returns the duration, as flag.Value requires.
func (p positiveDuration) String() string {
	if p.d == nil {
		return ""
	}
	return p.d.String()
}

// Set parses s, refusing durations that are not positive.
func (p positiveDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if d <= 0 {
		return fmt.Errorf("%v is not positive", d)
	}
	*p.d = d
	return nil
}

// usageError reports a usage error and returns its status; -h and --help
// print the usage and succeed.
func (g *globals) usageError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(g.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(g.stderr, "pglock: %v\nRun `pglock help` for usage.\n", err)
	return exitError
}

// fail reports an error and returns status.
func (g *globals) fail(status int, format string, args ...any) int {
	fmt.Fprintf(g.stderr, "pglock: "+format+"\n", args...)
	return status
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
