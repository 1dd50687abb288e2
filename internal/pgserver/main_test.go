package pgserver

import (
	"os"
	"testing"

	"cirello.io/pglock/internal/needtool"
)

// TestMain reports the tests skipped for a missing tool (see needtool).
func TestMain(m *testing.M) {
	code := m.Run()
	needtool.Report("cirello.io/pglock/internal/pgserver", os.Stderr)
	os.Exit(code)
}
