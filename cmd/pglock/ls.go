package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"cirello.io/pglock"
)

// lockJSON is how ls --json and get --json show a lock. RVN is null for a
// row released with KeepOnRelease.
type lockJSON struct {
	Name        string `json:"name"`
	Owner       string `json:"owner"`
	RVN         *int64 `json:"rvn"`
	DataSize    int    `json:"data_size"`
	DataPreview string `json:"data_preview"`
}

// toJSON returns the JSON form of a lock.
func toJSON(name, owner string, rvn int64, data []byte) lockJSON {
	j := lockJSON{Name: name, Owner: owner, DataSize: len(data), DataPreview: preview(data)}
	if rvn != 0 {
		j.RVN = &rvn
	}
	return j
}

// cmdLs lists the held locks, or every row with --all.
func cmdLs(ctx context.Context, g *globals, args []string) int {
	fs := g.flagSet("ls")
	all := fs.Bool("all", false, "also list rows released with KeepOnRelease")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return g.usageError(err)
	}
	if len(pos) > 0 {
		return g.usageError(fmt.Errorf("ls takes no arguments, got %q", pos))
	}
	db, c, err := g.client(ctx)
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	defer g.closeClient(db, c)
	locks, err := c.GetAllLocksContext(ctx)
	if err != nil {
		return g.fail(exitError, "%v", g.explain(err))
	}
	shown := make([]*pglock.ReadOnlyLock, 0, len(locks))
	for _, l := range locks {
		if *all || l.RecordVersionNumber() != 0 {
			shown = append(shown, l)
		}
	}
	if *asJSON {
		err = writeLocksJSON(g.stdout, shown)
	} else {
		err = writeLocksTable(g.stdout, shown)
	}
	if err != nil {
		return g.fail(exitError, "%v", err)
	}
	return exitOK
}

// writeLocksJSON writes locks as an indented JSON array of lockJSON.
func writeLocksJSON(w io.Writer, locks []*pglock.ReadOnlyLock) error {
	out := make([]lockJSON, 0, len(locks))
	for _, l := range locks {
		out = append(out, toJSON(l.Name(), l.Owner(), l.RecordVersionNumber(), l.Data()))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeLocksTable writes locks as aligned columns for a terminal: names,
// owners and data are made safe to print, and data is cut short.
func writeLocksTable(w io.Writer, locks []*pglock.ReadOnlyLock) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOWNER\tRVN\tDATA")
	for _, l := range locks {
		rvn := "released"
		if n := l.RecordVersionNumber(); n != 0 {
			rvn = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", safeText(l.Name(), 0), safeText(l.Owner(), 0), rvn, preview(l.Data()))
	}
	return tw.Flush()
}
