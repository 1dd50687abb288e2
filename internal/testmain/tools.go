package testmain

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"cirello.io/pglock/internal/needtool"
	"cirello.io/pglock/internal/pgserver"
)

// StartPgBouncer starts PgBouncer in mode in front of srv, stopped when t
// ends. Without a pgbouncer binary t is skipped, saying how to install it,
// and reported after the package's run; under CI=true it fails (see
// needtool).
func StartPgBouncer(t testing.TB, srv *pgserver.Server, mode string) *pgserver.PgBouncer {
	t.Helper()
	b, err := pgserver.StartPgBouncer(srv, mode)
	if errors.Is(err, pgserver.ErrNoPgBouncer) {
		needtool.Missing(t, pgserver.InstallPgBouncer, err)
	}
	if err != nil {
		t.Fatalf("cannot start PgBouncer (%s mode): %v", mode, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("stopping PgBouncer: %v", err)
		}
	})
	return b
}

// packagePath returns the import path of the package under test, as go
// test prints it: go test runs a package's tests in its directory, below
// the module's go.mod.
func packagePath() string {
	dir, err := os.Getwd()
	if err != nil {
		return "?"
	}
	for root := dir; ; {
		if mod, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil {
			rel, _ := filepath.Rel(root, dir)
			return path.Join(modulePath(string(mod)), filepath.ToSlash(rel))
		}
		parent := filepath.Dir(root)
		if parent == root {
			return dir
		}
		root = parent
	}
}

// modulePath returns the module path a go.mod declares.
func modulePath(mod string) string {
	for _, line := range strings.Split(mod, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(name), `"`)
		}
	}
	return "?"
}
