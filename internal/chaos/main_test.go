package chaos_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"cirello.io/pglock/internal/pgtest"
)

// srv is this package's own PostgreSQL: the chaos test stops and restarts
// it, so it must not be shared with other tests.
var srv *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(pgtest.MainServer(chaosNoLeaks{m}, &srv))
}

// chaosNoLeaks runs the tests, then fails the run if goroutines outlive them.
type chaosNoLeaks struct{ m *testing.M }

func (v chaosNoLeaks) Run() int {
	code := v.m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
		os.Stderr.WriteString("goleak: " + err.Error() + "\n")
		return 1
	}
	return 0
}
