// Package redact keeps connection strings, and the passwords they hold, out
// of messages. Drivers put the connection string, or the piece of it they
// could not parse, into their errors; a message scrubbed here carries
// neither, whatever the driver wrote, and an error scrubbed here still
// unwraps to the driver's own, for errors.Is and errors.As.
package redact

import (
	"sort"
	"strings"
)

// Placeholder stands where a secret was.
const Placeholder = "[redacted]"

// minSecret is the shortest password replaced wherever it appears: a
// shorter one would match ordinary words. The connection strings that hold
// such passwords, and the fragments of them drivers quote, are scrubbed all
// the same.
const minSecret = 3

// Secrets is what must not appear in a message: connection strings and
// passwords. The zero value and nil hold none. It is safe for concurrent
// use once built.
type Secrets struct {
	dsns  []string // connection strings, whole
	spans [][]span // where each connection string holds a password
	words []string // passwords, as written and unescaped; longest first
}

// New returns the secrets of the connection strings dsns; empty ones are
// ignored.
func New(dsns ...string) *Secrets {
	s := &Secrets{}
	for _, dsn := range dsns {
		if dsn == "" {
			continue
		}
		s.dsns = append(s.dsns, dsn)
		s.spans = append(s.spans, passwordSpans(dsn))
		s.words = append(s.words, passwords(dsn)...)
	}
	s.sortWords()
	return s
}

// AddPassword adds a password known apart from any connection string, such
// as $PGPASSWORD.
func (s *Secrets) AddPassword(pw string) {
	s.words = append(s.words, pw)
	s.sortWords()
}

// sortWords keeps the passwords long enough to replace, longest first, so
// that a password containing another is replaced whole.
func (s *Secrets) sortWords() {
	kept := s.words[:0]
	for _, w := range s.words {
		if len(w) >= minSecret {
			kept = append(kept, w)
		}
	}
	s.words = kept
	sort.Slice(s.words, func(i, j int) bool { return len(s.words[i]) > len(s.words[j]) })
}

// Empty reports whether s holds no secret.
func (s *Secrets) Empty() bool {
	return s == nil || len(s.dsns) == 0 && len(s.words) == 0
}

// String returns msg with every connection string, every password, and
// every quoted fragment taken from a connection string replaced by
// Placeholder.
func (s *Secrets) String(msg string) string {
	if s.Empty() {
		return msg
	}
	msg = s.quoted(msg)
	for _, dsn := range s.dsns {
		msg = strings.ReplaceAll(msg, dsn, Placeholder)
	}
	for _, w := range s.words {
		msg = strings.ReplaceAll(msg, w, Placeholder)
	}
	return msg
}
