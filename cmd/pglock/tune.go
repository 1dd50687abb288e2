package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lib/pq"

	"cirello.io/pglock"
	"cirello.io/pglock/internal/ident"
)

// cmdTune reports how the lock table stores its heartbeats, and with
// --apply gives it the fillfactor the library gives the tables it creates,
// so that heartbeats stay HOT updates and the table does not grow. With
// --rewrite it also rewrites the table at once (VACUUM FULL).
func cmdTune(ctx context.Context, g *globals, args []string) int {
	fs := g.flagSet("tune")
	apply := fs.Bool("apply", false, "set the table's fillfactor to the library's")
	rewrite := fs.Bool("rewrite", false, "--apply, then rewrite the table with VACUUM FULL (exclusive lock)")
	lockTimeout := fs.Duration("lock-timeout", 5*time.Second, "how long ALTER TABLE and VACUUM FULL may wait for the table")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	switch {
	case len(pos) > 0:
		return g.usageError(fmt.Errorf("tune takes no arguments, got %q", pos))
	case *lockTimeout <= 0:
		return g.usageError(errors.New("--lock-timeout must be positive"))
	}
	db, c, err := g.client(ctx)
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	defer g.closeClient(db, c)
	t := &tuner{g: g, db: db, c: c, lockTimeout: *lockTimeout}
	if err := t.tune(ctx, *apply || *rewrite, *rewrite); err != nil {
		return g.fail(exitError, "%v", g.explain(err))
	}
	return exitOK
}

// tuner is one pglock tune.
type tuner struct {
	g           *globals
	db          *sql.DB
	c           *pglock.Client
	lockTimeout time.Duration
}

// tableStats is what tune reports of the lock table.
type tableStats struct {
	table        string // schema-qualified, quoted for SQL text
	fillfactor   int
	size, idx    int64 // bytes of the table's main fork and of its indexes
	rows, held   int
	upd, hotUpd  int64 // updates, and HOT ones, since statistics were reset
	alreadyTuned bool
}

// tune reports the table, then applies the fillfactor and rewrites the
// table when asked to, and reports it again.
func (t *tuner) tune(ctx context.Context, apply, rewrite bool) error {
	st, err := t.inspect(ctx)
	if err != nil {
		return err
	}
	t.report(st)
	if !apply {
		if !st.alreadyTuned {
			fmt.Fprintf(t.g.stdout, "\nRun `pglock tune --apply` to set fillfactor %d, and `pglock tune --rewrite` to rewrite the table now.\n",
				pglock.LockTableFillfactor)
		}
		return nil
	}
	if err := t.apply(ctx, st); err != nil {
		return err
	}
	if rewrite {
		if err := t.rewrite(ctx, st); err != nil {
			return err
		}
	}
	after, err := t.inspect(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(t.g.stdout, "\nNow:")
	t.report(after)
	return nil
}

// statsQuery reads the lock table's storage and update statistics. $1 is
// the table's name quoted for SQL text; a table without a fillfactor of its
// own has the default, 100.
const statsQuery = `SELECT n.nspname, c.relname,
	COALESCE((SELECT o.option_value FROM pg_catalog.pg_options_to_table(c.reloptions) o
		WHERE o.option_name = 'fillfactor'), '100')::int,
	pg_catalog.pg_relation_size(c.oid), pg_catalog.pg_indexes_size(c.oid),
	COALESCE(s.n_tup_upd, 0), COALESCE(s.n_tup_hot_upd, 0)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = pg_catalog.to_regclass($1::text)`

// inspect reads the table's rows through the library, which fails on a
// missing table or one that is not a lock table as the other commands do,
// then its storage and statistics from the catalog.
func (t *tuner) inspect(ctx context.Context) (tableStats, error) {
	locks, err := t.c.GetAllLocksContext(ctx)
	if err != nil {
		return tableStats{}, err
	}
	st := tableStats{rows: len(locks)}
	for _, l := range locks {
		if l.RecordVersionNumber() != 0 {
			st.held++
		}
	}
	var schema, name string
	err = t.g.call(ctx, func(ctx context.Context) error {
		return t.db.QueryRowContext(ctx, statsQuery, quoteTable(t.g.tableName())).Scan(&schema, &name,
			&st.fillfactor, &st.size, &st.idx, &st.upd, &st.hotUpd)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return tableStats{}, fmt.Errorf("table %q was dropped meanwhile", t.g.tableName())
	}
	if err != nil {
		return tableStats{}, fmt.Errorf("cannot read the statistics of table %q: %w", t.g.tableName(), err)
	}
	st.table = ident.Table{Schema: schema, Name: name}.Quoted()
	st.alreadyTuned = st.fillfactor == pglock.LockTableFillfactor
	return st, nil
}

// report prints st.
func (t *tuner) report(st tableStats) {
	w := t.g.stdout
	fmt.Fprintf(w, "table:       %s\n", st.table)
	note := fmt.Sprintf("pglock creates its tables with %d", pglock.LockTableFillfactor)
	if st.alreadyTuned {
		note = "as pglock creates its tables"
	}
	fmt.Fprintf(w, "fillfactor:  %d (%s)\n", st.fillfactor, note)
	fmt.Fprintf(w, "size:        %s, indexes %s\n", sizeText(st.size), sizeText(st.idx))
	fmt.Fprintf(w, "rows:        %d, %d held\n", st.rows, st.held)
	if st.upd == 0 {
		fmt.Fprintf(w, "updates:     none counted since the statistics were reset\n")
		return
	}
	fmt.Fprintf(w, "updates:     %d, %d of them HOT (%.1f%%), since the statistics were reset\n",
		st.upd, st.hotUpd, 100*float64(st.hotUpd)/float64(st.upd))
}

// apply sets the table's fillfactor to the library's, unless it has it
// already. ALTER TABLE takes a lock that lets heartbeats go on; the setting
// applies to pages as they are written.
func (t *tuner) apply(ctx context.Context, st tableStats) error {
	if st.alreadyTuned {
		fmt.Fprintf(t.g.stdout, "\nThe fillfactor is %d already.\n", st.fillfactor)
		return nil
	}
	// The fillfactor is the library's constant, an integer: nothing a user
	// gives ends up in the statement but the quoted table name.
	stmt := "ALTER TABLE " + st.table + " SET (fillfactor = " + strconv.Itoa(pglock.LockTableFillfactor) + ")"
	if err := t.exec(ctx, stmt); err != nil {
		return fmt.Errorf("cannot set the fillfactor of %s: %w", st.table, err)
	}
	fmt.Fprintf(t.g.stdout, "\n%s: done. Pages get their free space as they are rewritten; "+
		"`pglock tune --rewrite` rewrites them all now.\n", stmt)
	return nil
}

// rewrite rewrites the table and its indexes with VACUUM FULL, after saying
// what that costs.
func (t *tuner) rewrite(ctx context.Context, st tableStats) error {
	stmt := "VACUUM FULL " + st.table
	fmt.Fprintf(t.g.stdout, "\n%s takes an exclusive lock on the table until it ends: meanwhile locks "+
		"cannot be acquired, released or heartbeated.\n", stmt)
	start := time.Now()
	if err := t.exec(ctx, stmt); err != nil {
		return fmt.Errorf("cannot rewrite %s: %w", st.table, err)
	}
	fmt.Fprintf(t.g.stdout, "%s: done in %v.\n", stmt, round(time.Since(start)))
	return nil
}

// exec runs stmt on a connection of its own whose lock_timeout is
// --lock-timeout, so that a table kept busy makes it fail rather than
// queue every heartbeat behind it.
func (t *tuner) exec(ctx context.Context, stmt string) error {
	err := t.g.call(ctx, func(ctx context.Context) error {
		conn, err := t.db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		timeout := strconv.FormatInt(t.lockTimeout.Milliseconds(), 10) + "ms"
		if _, err := conn.ExecContext(ctx, `SELECT pg_catalog.set_config('lock_timeout', $1, false)`, timeout); err != nil {
			return err
		}
		_, err = conn.ExecContext(ctx, stmt)
		return err
	})
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "55P03" { // lock_not_available
		return fmt.Errorf("the table stayed locked by other transactions for --lock-timeout %v; try again: %w", t.lockTimeout, err)
	}
	return err
}

// quoteTable returns a lock table's name ready for SQL text, read as
// WithCustomTable reads it (see ident.Split) and each part quoted, so that
// no name can change the statement it is put in.
func quoteTable(name string) string {
	return ident.Split(name).Quoted()
}

// sizeText is n bytes for reading.
func sizeText(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB (%d bytes)", n>>20, n)
	case n >= 10<<10:
		return fmt.Sprintf("%d KiB (%d bytes)", n>>10, n)
	}
	return fmt.Sprintf("%d bytes", n)
}
