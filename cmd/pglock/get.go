package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"cirello.io/pglock"
)

// cmdGet shows one lock; it exits 1 when there is no such row.
func cmdGet(ctx context.Context, g *globals, args []string) int {
	fs := g.flagSet("get")
	asJSON := fs.Bool("json", false, "print JSON")
	raw := fs.Bool("data", false, "write the lock's raw data to stdout, and nothing else")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	if len(pos) != 1 {
		return g.usageError(errors.New("get takes one lock NAME"))
	}
	name := pos[0]
	db, c, err := g.client(ctx)
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	defer g.closeClient(db, c)
	l, err := c.GetContext(ctx, name)
	if errors.Is(err, pglock.ErrLockNotFound) {
		return g.fail(exitAbsent, "no lock named %q in table %q", safeText(name, 0), g.tableName())
	}
	if err != nil {
		return g.fail(exitError, "%v", g.explain(err))
	}
	if err := g.showLock(l, *raw, *asJSON); err != nil {
		return g.fail(exitError, "%v", err)
	}
	return exitOK
}

// showLock writes l to stdout: its raw data alone, JSON, or a short
// description safe for a terminal.
func (g *globals) showLock(l *pglock.Lock, raw, asJSON bool) error {
	switch {
	case raw:
		_, err := g.stdout.Write(l.Data())
		return err
	case asJSON:
		b, _ := json.MarshalIndent(toJSON(l.Name(), l.Owner(), l.RecordVersionNumber(), l.Data()), "", "  ")
		fmt.Fprintf(g.stdout, "%s\n", b)
	default:
		rvn := "released (row kept)"
		if n := l.RecordVersionNumber(); n != 0 {
			rvn = fmt.Sprint(n)
		}
		fmt.Fprintf(g.stdout, "name:  %s\nowner: %s\nrvn:   %s\ndata:  %s (%d bytes)\n",
			safeText(l.Name(), 0), safeText(l.Owner(), 0), rvn, preview(l.Data()), len(l.Data()))
	}
	return nil
}
