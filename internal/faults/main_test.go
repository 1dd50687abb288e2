// Package faults_test holds the tests that stop the PostgreSQL server or
// kill its backends: they get a server of their own and run one at a time.
package faults_test

import (
	"os"
	"testing"

	"cirello.io/pglock/internal/pgserver"
	"cirello.io/pglock/internal/testmain"
)

// srv is this package's own PostgreSQL.
var srv *pgserver.Server

func TestMain(m *testing.M) {
	os.Exit(testmain.Run(m, &srv))
}

// fullSuiteOnly skips t under -short (see testmain.FullSuiteOnly).
func fullSuiteOnly(t *testing.T) {
	t.Helper()
	testmain.FullSuiteOnly(t)
}
