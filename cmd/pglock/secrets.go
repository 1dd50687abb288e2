package main

import (
	"io"
	"os"

	"cirello.io/pglock/internal/redact"
)

// secretWriter writes pglock's messages with every connection string it
// may have used, and every password, scrubbed (see internal/redact):
// drivers quote the connection string, or a piece of it, in their errors.
// Each message is one Write, so no secret is split between two.
type secretWriter struct {
	w io.Writer
	g *globals
}

func (s secretWriter) Write(p []byte) (int, error) {
	secrets := redact.New(s.g.dsn, os.Getenv(envDSN))
	if pw := os.Getenv("PGPASSWORD"); pw != "" {
		secrets.AddPassword(pw)
	}
	if _, err := io.WriteString(s.w, secrets.String(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
