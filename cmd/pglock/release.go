package main

import (
	"context"
	"errors"
	"fmt"

	"cirello.io/pglock"
)

// cmdRelease deletes a lock row whoever holds it; it refuses without --force.
func cmdRelease(ctx context.Context, g *globals, args []string) int {
	fs := g.flagSet("release")
	force := fs.Bool("force", false, "really delete the lock, breaking it for its holder")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	if len(pos) != 1 {
		return g.usageError(errors.New("release takes one lock NAME"))
	}
	name := pos[0]
	if !*force {
		return g.fail(exitError, "refusing to release %q without --force: its holder would go on "+
			"believing it holds the lock while someone else takes it", safeText(name, 0))
	}
	db, c, err := g.client(ctx)
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	defer g.closeClient(db, c)
	err = c.ForceRelease(ctx, name)
	if errors.Is(err, pglock.ErrLockNotFound) {
		return g.fail(exitAbsent, "no lock named %q in table %q", safeText(name, 0), g.tableName())
	}
	if err != nil {
		return g.fail(exitError, "%v", g.explain(err))
	}
	fmt.Fprintf(g.stdout, "released %q\n", safeText(name, 0))
	return exitOK
}
