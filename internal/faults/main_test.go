// Package faults_test holds the tests that stop the PostgreSQL server or
// kill its backends: they get a server of their own and run one at a time.
package faults_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"cirello.io/pglock/internal/pgtest"
)

// srv is this package's own PostgreSQL.
var srv *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(pgtest.MainServer(faultsNoLeaks{m}, &srv))
}

// faultsNoLeaks runs the tests, then fails the run if goroutines outlive
// them.
type faultsNoLeaks struct{ m *testing.M }

func (v faultsNoLeaks) Run() int {
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
