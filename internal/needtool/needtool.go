// Package needtool stops tests that need a tool the machine lacks, such as
// PgBouncer. Where only PostgreSQL is installed the suite still passes:
// such a test is skipped with a message that says what to install, and the
// package's TestMain reports every test skipped so, after its run, where
// `go test ./...` shows it even for a package that passed. Under CI=true a
// missing tool fails the test instead, so that CI never loses one.
package needtool

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
)

var (
	mu      sync.Mutex
	skipped = map[string][]string{} // install command → names of the tests skipped for it
)

// Missing stops t, which cannot run without a tool: err says which tool is
// missing, install is the command that installs it. Under CI=true it fails
// t; elsewhere it skips t and records it for Report.
func Missing(t testing.TB, install string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v\n(CI=true: a missing tool fails the test instead of skipping it; run `%s`)", err, install)
	}
	mu.Lock()
	skipped[install] = append(skipped[install], t.Name())
	mu.Unlock()
	t.Skipf("SKIPPED, a tool is missing: %v\nRun `%s` to run this test; under CI=true it fails instead of skipping.", err, install)
}

// Summary returns the report of the tests Missing skipped, one line per
// install command, or "" when none was.
func Summary(pkg string) string {
	mu.Lock()
	defer mu.Unlock()
	var b strings.Builder
	installs := make([]string, 0, len(skipped))
	for install := range skipped {
		installs = append(installs, install)
	}
	sort.Strings(installs)
	for _, install := range installs {
		names := append([]string(nil), skipped[install]...)
		sort.Strings(names)
		fmt.Fprintf(&b, "%s: SKIPPED %d tests, a tool is missing (run `%s` to run them): %s\n",
			pkg, len(names), install, strings.Join(names, ", "))
	}
	return b.String()
}

// Report writes Summary where the person who ran the tests sees it: `go
// test ./...` prints nothing of a package that passed, so the report goes
// to the controlling terminal when there is one, and to w as well (shown
// with -v, or when the package fails).
func Report(pkg string, w io.Writer) {
	s := Summary(pkg)
	if s == "" {
		return
	}
	fmt.Fprint(w, s)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprint(tty, s)
		_ = tty.Close()
	}
}
