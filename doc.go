// Package pglock is a distributed lock library backed by PostgreSQL.
//
// A Client keeps named locks as rows of one table. Any number of processes,
// on any number of hosts, that share the table (and the lease) exclude each
// other: at most one of them holds a given name at a time. It is a drop-in
// port of the original cirello.io/pglock, with the same API, the same table
// and the same behaviour, plus the improvements listed in CHANGELOG.md and
// README.md.
//
// # How it works
//
// A held lock's heartbeat bumps the row's record version number (RVN) from a
// sequence. A waiter takes a lock over only when it saw the same RVN stay
// unchanged for a whole lease, timed by its own monotonic clock: no absolute
// time is ever stored, so the clocks of different hosts need not agree. A
// holder counts its lock lost when no heartbeat succeeded for a whole lease
// (less a 1% margin for clock-rate drift), timed from the start of the last
// successful one, so it gives the lock up before any waiter may take it.
//
// # Quick start
//
// Open a *sql.DB with lib/pq or pgx, make a Client, create the table once,
// and acquire:
//
//	db, err := sql.Open("postgres", dsn) // or sql.Open("pgx", dsn)
//	if err != nil {
//		return err
//	}
//	defer db.Close()
//	c, err := pglock.New(db,
//		pglock.WithLeaseDuration(10*time.Second),
//		pglock.WithHeartbeatFrequency(2*time.Second))
//	if err != nil {
//		return err
//	}
//	if err := c.TryCreateTable(); err != nil {
//		return err
//	}
//	l, err := c.Acquire("customer-42")
//	if err != nil {
//		return err
//	}
//	defer l.Close()
//	select {
//	case <-l.Done():
//		return l.Err() // lost: stop working on customer-42
//	default:
//	}
//	return nil
//
// The snippet is the body of a function returning error; the package example
// runs it. Client.Do wraps the acquire, work and release in one call and
// cancels the work's context when the lock is lost.
//
// # Waiting and handoff
//
// AcquireContext waits until the lock is released, taken over, or its context
// ends. A release wakes waiting clients within milliseconds through
// LISTEN/NOTIFY: each Client keeps one listening connection while any of its
// goroutines waits, and only the first waiter per name sends statements.
// When no notification can arrive (a *sql.DB made with sql.OpenDB and no
// WithSessionDSN, unless it is an unbounded pgx pool; a pooler in transaction
// mode; a release by the original library) waiters poll, so they still
// acquire, only later. FailIfLocked does not wait.
//
// # Connections
//
// Acquires and reads run on the *sql.DB given to New, one statement per
// call. While the client holds locks it also keeps a small pool of its own
// for the background heartbeats (up to four idle connections, closed shortly
// after the last lock is released), plus one LISTEN connection while any of
// its goroutines waits. It opens them with the connection string the *sql.DB
// was opened with by sql.Open, or the one given with WithSessionDSN. A
// *sql.DB made with sql.OpenDB has none: without WithSessionDSN the client
// then heartbeats on that pool, and a pool kept busy by the caller can delay
// the heartbeats past the lease.
//
// No call outlives its context by more than a few tens of milliseconds,
// whatever the driver does on a dead connection: a statement that does not
// return in time is left behind, and counted in Stats.AbandonedStatements and
// Stats.StuckStatements. A heartbeat that does not return in time is retried
// on another connection within the lease. Client.Close releases the locks
// still held (a lock it cannot release is left to expire), stops everything
// the client runs in the background, and never closes the *sql.DB.
//
// # Poolers
//
// Behind PgBouncer in session mode nothing changes. In transaction mode,
// give pgx default_query_exec_mode=exec (or simple_protocol) and lib/pq
// binary_parameters=yes, and give WithSessionDSN a direct or session-mode
// connection string so that releases wake waiters; docs/poolers.md in the
// repository has the details and figures.
//
// # Losing a lock, fencing
//
// A lock is lost when someone else took it over or no heartbeat succeeded for
// a whole lease. Lock.Done is closed then, and Lock.Err says why; Client.Do
// cancels the context of the function it runs. A heartbeat that failed is
// retried within the lease, and one whose outcome is unknown (the connection
// broke after the commit) is settled by reading the row back, so a brief
// outage does not cost the lock. While a lock is held,
// Lock.RecordVersionNumber is a fencing token: it only grows, and no other
// holder of the name ever sees the same number. Lock.Guard fences a write
// made in a PostgreSQL transaction: the transaction commits only if the lock
// was held throughout.
//
// # Leader election
//
// Client.NewElection returns an Election built on the lock of the same name:
// Campaign blocks until this client leads and publishes a value, Leader reads
// the current leader without campaigning, Observe reports every change, and
// the Leadership that Campaign returns can Proclaim a new value, Resign (a
// waiting candidate takes over at once) and signals its loss through Done.
// Client.ForceRelease is the operator's override that deletes a lock's row
// whoever holds it. The pglock command (cmd/pglock) runs a shell command
// under a lock and kills it when the lock is lost.
//
// # Errors
//
// Every error wraps a sentinel (ErrNotAcquired, ErrLockAlreadyReleased,
// ErrLockNotFound, ...) for errors.Is, and a kind for errors.As:
// UnavailableError when the database could not be reached or the connection
// broke, FailedPreconditionError for serialization failures (SQLSTATE 40001)
// that outlasted the internal retries, NotExistError for a missing lock, and
// OtherError for the rest. Both drivers' errors are classified alike. Every
// error of an acquisition wraps ErrNotAcquired, whatever its cause. An error
// showing the lock table missing says to create it. No error or log record
// carries a connection string or its password, whatever the driver wrote
// into its own error, which stays wrapped for errors.Is and errors.As.
//
// # Drivers
//
// New accepts a *sql.DB whose driver is lib/pq ("postgres") or pgx v5's
// database/sql driver (github.com/jackc/pgx/v5/stdlib, "pgx"), and refuses
// others with ErrNotPostgreSQLDriver; UnsafeNew skips that check. This
// package imports lib/pq only: pgx is recognised by its type name and, to
// LISTEN, used through its own connection by reflection.
//
// # Logging
//
// The client is silent unless given a logger. WithSlog takes a *slog.Logger
// and logs structured attributes (lock, owner, rvn, durations), never the
// lock's data. Routine events are Debug; a lost lock is Warn. The original's
// WithLogger and WithLevelLogger keep working; a *slog.Logger handed to
// WithLevelLogger is used as a structured logger.
//
// # Observability
//
// Client.Stats returns a snapshot of counters and timings: acquisitions,
// waits and their durations, handoff latency after a release notification,
// stale takeovers, losses, heartbeats and their failures, and whether release
// notifications arrive. It costs a few atomic loads and adds no dependency.
// The module cirello.io/pglock/prometheus exports it as Prometheus metrics
// (a module of its own, so that this one needs no metrics library); an
// OpenTelemetry exporter maps the same fields to observable instruments in a
// callback.
//
// # Further documentation
//
// The repository's docs directory has the topic guides: safety.md (the
// guarantee, what it assumes, and how it is tested), operations.md
// (connections, network settings, upgrading from the original library,
// monitoring), election.md, cli.md (the pglock command) and performance.md;
// prometheus.md and cron.md describe the modules cirello.io/pglock/prometheus
// (a Prometheus collector of Stats) and cirello.io/pglock/cron (robfig/cron
// jobs on one replica at a time).
package pglock
