package chaos_test

import (
	"os"
	"testing"

	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is this package's own PostgreSQL: the chaos test stops and restarts
// it, so it must not be shared with other tests.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}
