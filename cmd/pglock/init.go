package main

import (
	"context"
	"fmt"
)

// cmdInit creates the lock table, its sequence and its fair queue where
// they are missing.
func cmdInit(ctx context.Context, g *globals, args []string) int {
	fs := g.flagSet("init")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	if len(pos) > 0 {
		return g.usageError(fmt.Errorf("init takes no arguments, got %q", pos))
	}
	db, c, err := g.client(ctx)
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	defer g.closeClient(db, c)
	// TryCreateTable takes no context: run it so that a signal still ends
	// the wait when the server stops answering.
	err = g.call(ctx, func(context.Context) error { return c.TryCreateTable() })
	if err != nil {
		return g.fail(exitError, "%v", g.explain(err))
	}
	fmt.Fprintf(g.stdout, "table %q is ready\n", g.tableName())
	return exitOK
}
