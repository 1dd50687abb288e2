package testmain

import "testing"

// FullSuiteOnly skips t under -short, and says so. The short tier, `go test
// -short ./...`, runs the unit tests, the examples and a short run of the
// fault schedules; the tests that spend seconds of real time (failovers,
// leases that must run out, the demo) run in the full suite only.
func FullSuiteOnly(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("in the full suite only: run without -short")
	}
}
