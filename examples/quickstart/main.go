// Command quickstart takes the lock "customer-42", works while it holds it,
// and releases it. It reads the PostgreSQL connection string from
// $DATABASE_URL (empty: libpq's PG* variables), and creates the lock table
// when it is missing.
//
//	DATABASE_URL='postgres://app@localhost/app?sslmode=disable' go run ./examples/quickstart
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"time"

	_ "github.com/lib/pq" // or pgx: _ "github.com/jackc/pgx/v5/stdlib" and sql.Open("pgx", dsn)

	"cirello.io/pglock"
)

func main() {
	if err := run(os.Getenv("DATABASE_URL")); err != nil {
		log.Fatal(err)
	}
}

func run(dsn string) error {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := pglock.New(db,
		pglock.WithLeaseDuration(10*time.Second),
		pglock.WithHeartbeatFrequency(2*time.Second))
	if err != nil {
		return err
	}
	if err := c.TryCreateTable(); err != nil { // leaves an existing table alone
		return err
	}
	l, err := c.Acquire("customer-42") // waits while someone else holds it
	if err != nil {
		return err
	}
	select {
	case <-l.Done(): // lost: someone else may hold it now; stop working
		return l.Err()
	default: // work on customer 42
		fmt.Println("holding", l.Name())
	}
	if err := l.Close(); err != nil { // releases it
		return err
	}
	return c.Close(context.Background()) // stops the client's background work
}
