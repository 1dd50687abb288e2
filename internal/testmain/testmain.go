// Package testmain is the TestMain of pglock's test packages: it starts a
// throwaway PostgreSQL (internal/pgserver), runs the tests against it,
// fails the run if goroutines the tests started outlive them, and reports
// the tests skipped for a missing tool.
package testmain

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"cirello.io/pglock/internal/needtool"
	"cirello.io/pglock/internal/pgserver"
)

// serverWaiter is the goroutine pgserver runs while a server (or pgbouncer)
// process lives. A test that restarts the server starts a new one: it
// belongs to the server, not to the test, so it is not a leak.
const serverWaiter = "cirello.io/pglock/internal/pgserver.(*proc).wait"

// Run starts the server (or uses PGLOCK_TEST_DSN), sets *srv to it, runs
// the tests, stops the server, and returns the exit code for os.Exit. The
// run fails if the tests pass but leave goroutines behind. The tests
// skipped for a missing tool (see StartPgBouncer) are reported after the
// run, whatever its outcome.
func Run(m *testing.M, srv **pgserver.Server) int {
	code := pgserver.MainServer(leakCheck{m}, srv)
	needtool.Report(packagePath(), os.Stderr)
	return code
}

// leakCheck runs the tests, then looks for goroutines that outlive them.
type leakCheck struct{ m *testing.M }

func (c leakCheck) Run() int {
	// Goroutines alive before the tests (the server's, the runtime's) are
	// not leaks; everything the tests start must be gone at the end.
	before := goleak.IgnoreCurrent()
	code := c.m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(before, goleak.IgnoreAnyFunction(serverWaiter)); err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		return 1
	}
	return 0
}
