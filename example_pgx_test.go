package pglock_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"cirello.io/pglock"
)

// A program that talks to PostgreSQL through pgx uses New as it would with
// lib/pq: New trusts pgx v5's database/sql driver. Opened with sql.Open and a
// connection string, releases reach waiters through LISTEN on a connection
// of pgx's own, outside the pool.
func Example_pgx() {
	dsn := exampleDSN() // e.g. "postgres://app@db.internal/app?sslmode=verify-full"
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	c, err := pglock.New(db, pglock.WithCustomTable("example_pgx"), pglock.WithOwner("report-worker"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.TryCreateTable(); err != nil {
		log.Fatal(err)
	}
	defer c.DropTable() //nolint:errcheck // example cleanup

	err = c.Do(context.Background(), "nightly-report", func(ctx context.Context, l *pglock.Lock) error {
		fmt.Printf("%s holds %s\n", l.Owner(), l.Name())
		return nil // ctx is cancelled if the lock is lost meanwhile
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("released:", c.Stats().Released)
	// Output:
	// report-worker holds nightly-report
	// released: 1
}
