package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lib/pq"

	"cirello.io/pglock"
)

// envDSN is the environment variable read when --dsn is not given.
const envDSN = "PGLOCK_DSN"

// connectTimeout bounds the first connection to the server; the exit path
// (--exit-timeout) comes after it. A variable for the tests.
var connectTimeout = 15 * time.Second

// source returns the connection string to use and where it came from.
// An empty string makes lib/pq read libpq's PG* environment variables.
func (g *globals) source() (dsn, from string) {
	switch {
	case g.dsn != "":
		return g.dsn, "--dsn"
	case os.Getenv(envDSN) != "":
		return os.Getenv(envDSN), "$" + envDSN
	}
	return "", "the PG* environment variables"
}

// tableName returns the lock table to use.
func (g *globals) tableName() string {
	if g.table == "" {
		return pglock.DefaultTableName
	}
	return g.table
}

// open connects to the server and checks that it answers, within ctx and
// connectTimeout whatever the network does. The DSN itself is never
// printed: it may hold a password.
func (g *globals) open(ctx context.Context) (*sql.DB, error) {
	dsn, from := g.source()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("bad connection string (from %s): %w", from, err)
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := g.call(pctx, db.PingContext); err != nil {
		g.closeClient(db, nil)
		return nil, fmt.Errorf("cannot connect to PostgreSQL (connection string from %s): %w", from, err)
	}
	return db, nil
}

// client connects and returns a lock client on the table. The caller stops
// both with closeClient or shutdown.
func (g *globals) client(ctx context.Context, opts ...pglock.ClientOption) (*sql.DB, *pglock.Client, error) {
	db, err := g.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, err := pglock.New(db, append([]pglock.ClientOption{pglock.WithCustomTable(g.tableName())}, opts...)...)
	if err != nil {
		g.closeClient(db, nil)
		return nil, nil, err
	}
	return db, c, nil
}

// explain adds a hint to errors an operator can fix.
func (g *globals) explain(err error) error {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return err
	}
	switch pqErr.Code {
	case "42P01": // undefined_table
		if strings.Contains(err.Error(), "pglock init") { // the library's own hint
			return fmt.Errorf("table %q does not exist: %w", g.tableName(), err)
		}
		return fmt.Errorf("table %q does not exist: create it with `pglock init` (%w)", g.tableName(), err)
	case "3F000": // invalid_schema_name
		return fmt.Errorf("the schema of table %q does not exist: create it first (%w)", g.tableName(), err)
	}
	return err
}
