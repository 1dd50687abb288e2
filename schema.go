package pglock

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"cirello.io/pglock/internal/ident"
)

// maxIdentifierBytes is PostgreSQL's NAMEDATALEN-1.
const maxIdentifierBytes = ident.MaxBytes

// identifier is a possibly schema-qualified table name, already parsed into
// its parts as PostgreSQL would read them.
type identifier struct {
	schema, name string // schema may be empty
}

// parseTableName reads a table name the way the original library's users
// wrote it: "locks", "myschema.locks", `"My Table"` or `s."t"`. Unquoted parts
// fold to lower case. Text that is none of these is taken whole as one
// identifier, so a hostile name becomes a strange table name, never SQL.
// Every error wraps ErrInvalidTableName.
func parseTableName(s string) (identifier, error) {
	t, err := ident.Parse(s)
	if err != nil {
		reason := err.Error()
		if e := (*ident.Error)(nil); errors.As(err, &e) {
			reason = e.Reason
		}
		return identifier{}, invalidTableName(s, reason)
	}
	id := identifier{schema: t.Schema, name: t.Name}
	if id.sequence().name == id.name {
		return identifier{}, invalidTableName(s, fmt.Sprintf("%d bytes leave no room for the %s sequence name", len(id.name), sequenceSuffix))
	}
	// Schemas named pg_* are the system's: pg_catalog and pg_toast hold
	// catalogs nobody may create tables in, and a pg_temp table is seen by
	// one session only, never by the other clients of a lock. PostgreSQL
	// refuses to create any other schema named pg_*.
	if strings.HasPrefix(id.schema, "pg_") {
		return identifier{}, invalidTableName(s, "schemas named pg_* belong to the system")
	}
	return id, nil
}

// invalidTableName is the error for the table name s, with reason in
// parentheses unless it is "".
func invalidTableName(s, reason string) error {
	if reason == "" {
		return fmt.Errorf("%w: %q", ErrInvalidTableName, s)
	}
	return fmt.Errorf("%w: %q (%s)", ErrInvalidTableName, s, reason)
}

// mayBeCatalog reports whether the name may resolve to a relation initdb
// made: an unqualified pg_* name is looked up in pg_catalog first (unless
// search_path lists pg_catalog later), and information_schema holds the
// system's views. Only such names need checkTable's look-up.
func (id identifier) mayBeCatalog() bool {
	return (id.schema == "" && strings.HasPrefix(id.name, "pg_")) || id.schema == "information_schema"
}

// firstNormalObjectID is PostgreSQL's FirstNormalObjectId: every object
// initdb creates has a smaller OID, every object made afterwards a larger one.
const firstNormalObjectID = 16384

// checkTable refuses, with ErrInvalidTableName, a table name that resolves
// through the session's search_path to a relation initdb made (a system
// catalog such as pg_locks, or a system view), so the client never reads or
// writes one. creating is true for CreateTable, which may use such a name
// when the table it creates will come first in later look-ups (search_path
// lists the creation schema before pg_catalog). It runs before the first
// statement of a client whose name mayBeCatalog; once it passed it is not
// run again. For other names it costs nothing.
func (c *Client) checkTable(ctx context.Context, creating bool) error {
	if !c.table.mayBeCatalog() || c.tableChecked.Load() {
		return nil
	}
	var (
		oid       int64
		qualified string
		shadowed  bool
	)
	err := c.statement(ctx, func(ctx context.Context) error {
		return c.keep.onPool(ctx, func(ctx context.Context, q querier) error {
			return q.QueryRowContext(ctx, c.sql.resolveTable, c.table.quoted(), c.table.schema == "").Scan(&oid, &qualified, &shadowed)
		})
	}, nil)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		// No relation of that name yet: CreateTable makes one of ours.
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot look up table %s: %w", c.table.quoted(), err))
	case oid >= firstNormalObjectID:
		c.tableChecked.Store(true)
	case !creating || !shadowed:
		return &OtherError{fmt.Errorf("%w: %s resolves to the system relation %s; qualify the table with its schema, as in public.%s",
			ErrInvalidTableName, c.table.quoted(), qualified, ident.Quote(c.table.name))}
	}
	return nil
}

// quoted returns the identifier ready for SQL text.
func (id identifier) quoted() string {
	return ident.Table{Schema: id.schema, Name: id.name}.Quoted()
}

// sequenceSuffix makes the name of a table's record version number sequence.
const sequenceSuffix = "_rvn"

// sequence is the <table>_rvn sequence next to the table.
func (id identifier) sequence() identifier { return id.suffixed(sequenceSuffix) }

// suffixed is the relation named after id with suffix, in id's schema, its
// name cut to maxIdentifierBytes as PostgreSQL cuts it (suffixes are ASCII
// and a table name at most maxIdentifierBytes, so the cut never splits a
// character).
func (id identifier) suffixed(suffix string) identifier {
	name := id.name + suffix
	if len(name) > maxIdentifierBytes {
		name = name[:maxIdentifierBytes]
	}
	return identifier{schema: id.schema, name: name}
}

// queueSuffix makes the name of a table's fair queue (queue.go).
const queueSuffix = "_queue"

// queue is the <table>_queue table next to the table.
func (id identifier) queue() identifier { return id.suffixed(queueSuffix) }

// channel is the LISTEN/NOTIFY channel for the table's releases. It is
// derived from the table, so every client of one table shares it, and it
// always fits PostgreSQL's 63-byte limit.
func (id identifier) channel() string {
	sum := sha256.Sum256([]byte(id.schema + "\x00" + id.name))
	return "pglock_" + hex.EncodeToString(sum[:12])
}

// CreateTable creates the lock table and its record version number sequence.
// It fails if either exists already, and then leaves both as they were.
// Errors are an OtherError (the table exists, no privilege) or an
// UnavailableError (the database could not be reached).
func (c *Client) CreateTable() error {
	return c.createTable(context.Background(), false)
}

// TryCreateTable creates the lock table and its sequence where they do not
// exist yet, and leaves existing ones alone. Where the sequence cannot be
// OWNED BY the table (managed PostgreSQL where the table's owner is another
// role), the sequence is created without that clause. It is safe to call
// from many processes at once. Errors are typed as CreateTable's.
func (c *Client) TryCreateTable() error {
	return c.createTable(context.Background(), true)
}

func (c *Client) createTable(ctx context.Context, ifNotExists bool) error {
	if err := c.checkTable(ctx, true); err != nil {
		return err
	}
	createTable, createSeq := c.sql.createTable, c.sql.createSequence
	if ifNotExists {
		createTable, createSeq = c.sql.createTableIfNotExists, c.sql.createSequenceIfNotExists
	}
	if _, err := c.exec(ctx, createTable); err != nil && !(ifNotExists && isAlreadyExists(err)) {
		return typeError(fmt.Errorf("pglock: cannot create table %s: %w", c.table.quoted(), err))
	}
	_, err := c.exec(ctx, createSeq+c.sql.ownedBy)
	if err != nil && ifNotExists && isOwnershipMismatch(err) {
		c.log.Debug("sequence created without OWNED BY: the table belongs to another role", "table", c.table.quoted(), "error", err)
		_, err = c.exec(ctx, createSeq)
	}
	if err != nil && !(ifNotExists && isAlreadyExists(err)) {
		return typeError(fmt.Errorf("pglock: cannot create sequence %s: %w", c.sql.sequence, err))
	}
	return c.createQueue(ctx)
}

// createQueue creates the table's fair queue (queue.go) where it does not
// exist yet: beside a table that has none, it adds one without taking any
// lock the table's clients wait on.
func (c *Client) createQueue(ctx context.Context) error {
	q := c.table.queue()
	if c.fq.none {
		return nil // no room for its name: waiters race, as in the original
	}
	if _, err := c.exec(ctx, c.fq.sql.createIfNotExists); err != nil && !isAlreadyExists(err) {
		return typeError(fmt.Errorf("pglock: cannot create the fair queue %s: %w", q.quoted(), err))
	}
	c.fq.state.Store(queuePresent)
	return nil
}

// DropTable drops the lock table and its sequence, and every lock with them.
// Locks held through it are lost within a lease. It fails with an
// OtherError when the table does not exist, or an UnavailableError.
func (c *Client) DropTable() error {
	ctx := context.Background()
	if err := c.checkTable(ctx, false); err != nil {
		return err
	}
	if _, err := c.exec(ctx, c.sql.dropTable); err != nil {
		return typeError(fmt.Errorf("pglock: cannot drop table %s: %w", c.table.quoted(), err))
	}
	// The sequence went with the table when it was OWNED BY it.
	if _, err := c.exec(ctx, c.sql.dropSequence); err != nil {
		return typeError(fmt.Errorf("pglock: cannot drop sequence %s: %w", c.sql.sequence, err))
	}
	if _, err := c.exec(ctx, c.fq.sql.drop); err != nil {
		return typeError(fmt.Errorf("pglock: cannot drop the fair queue %s: %w", c.table.queue().quoted(), err))
	}
	c.fq.state.Store(queueUnknown)
	return nil
}

// exec runs a DDL statement on the caller's pool, its error scrubbed of
// secrets.
func (c *Client) exec(ctx context.Context, query string) (sql.Result, error) {
	res, err := c.db.ExecContext(ctx, query)
	return res, c.secrets.Error(err)
}

// isAlreadyExists is true for errors of concurrent IF NOT EXISTS creation:
// duplicate_table, duplicate_object, and the unique_violation two racing
// CREATEs can meet on the catalog.
func isAlreadyExists(err error) bool {
	switch sqlState(err) {
	case "42P07", "42710", "23505":
		return true
	}
	return false
}

// isOwnershipMismatch is true when a sequence cannot be OWNED BY a table of
// another owner (object_not_in_prerequisite_state or insufficient_privilege).
func isOwnershipMismatch(err error) bool {
	switch sqlState(err) {
	case "55000", "42501":
		return true
	}
	return false
}
