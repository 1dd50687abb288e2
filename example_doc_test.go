package pglock_test

import (
	"database/sql"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// docQuickstart is the quick start snippet of doc.go, as a function that
// compiles; TestDocQuickstartSnippet keeps the two identical.
func docQuickstart(dsn string) error {
	// snippet start
	db, err := sql.Open("postgres", dsn) // or sql.Open("pgx", dsn)
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
	if err := c.TryCreateTable(); err != nil {
		return err
	}
	l, err := c.Acquire("customer-42")
	if err != nil {
		return err
	}
	defer l.Close()
	select {
	case <-l.Done():
		return l.Err() // lost: stop working on customer-42
	default:
	}
	return nil
	// snippet end
}

// The quick start of the package documentation, run against a server: open a
// pool, make a client, create the table, acquire, and release.
func Example_quickstart() {
	// A database of its own, since the quick start uses the default table.
	name := fmt.Sprintf("pglock_quickstart_%d", time.Now().UnixNano())
	dsn, err := srv.CreateDatabase(name)
	if err != nil {
		log.Fatal(err)
	}
	if err := docQuickstart(dsn); err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		log.Fatal(err)
	}
	c, err := pglock.New(db)
	if err != nil {
		log.Fatal(err)
	}
	locks, err := c.GetAllLocks()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("locks held after the snippet returned:", len(locks))
	if err := db.Close(); err != nil {
		log.Fatal(err)
	}
	if err := srv.Exec(`DROP DATABASE "` + name + `"`); err != nil {
		log.Fatal(err)
	}
	// Output:
	// locks held after the snippet returned: 0
}

// TestDocQuickstartSnippet checks that the snippet in doc.go is the body of
// docQuickstart, which the compiler checks.
func TestDocQuickstartSnippet(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	var snippet []string
	for _, line := range strings.Split(string(doc), "\n") {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			snippet = append(snippet, code)
		}
	}
	src, err := os.ReadFile("example_doc_test.go")
	require.NoError(t, err)
	_, body, ok := strings.Cut(string(src), "// snippet start\n")
	require.True(t, ok)
	body, _, ok = strings.Cut(body, "\t// snippet end")
	require.True(t, ok)
	var want []string
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		want = append(want, strings.TrimPrefix(line, "\t"))
	}
	require.Equal(t, want, snippet, "doc.go's quick start differs from docQuickstart")
}
