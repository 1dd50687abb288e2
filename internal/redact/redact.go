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
// Placeholder. All three are found in msg as it is, so that one covering
// part of another is replaced whole.
func (s *Secrets) String(msg string) string {
	if s.Empty() {
		return msg
	}
	hidden := make([]bool, len(msg))
	hide := func(start, end int) {
		for i := start; i < end; i++ {
			hidden[i] = true
		}
	}
	for _, secret := range append(append([]string(nil), s.dsns...), s.words...) {
		for from := 0; ; {
			i := strings.Index(msg[from:], secret)
			if i < 0 {
				break
			}
			hide(from+i, from+i+len(secret))
			from += i + 1
		}
	}
	s.pieces(msg, hide)
	s.quoted(msg, hide)
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		switch {
		case !hidden[i]:
			b.WriteByte(msg[i])
		case i == 0 || !hidden[i-1]:
			b.WriteString(Placeholder)
		}
	}
	return b.String()
}

// pieceBytes is how much of a password a run of text must hold for pieces
// to hide it: fewer bytes would match ordinary words.
const pieceBytes = 6

// pieces hides every run of msg that stands in a connection string over
// pieceBytes of its password (or all of a shorter one): a driver that
// misreads where the password ends quotes a piece of it with the text
// around.
func (s *Secrets) pieces(msg string, hide func(start, end int)) {
	for k, dsn := range s.dsns {
		for _, sp := range s.spans[k] {
			for i := 0; i < len(msg); i++ {
				for j := 0; j < len(dsn); j++ {
					n := 0
					for i+n < len(msg) && j+n < len(dsn) && msg[i+n] == dsn[j+n] {
						n++
					}
					if overlap := min(sp.end, j+n) - max(sp.start, j); overlap >= min(pieceBytes, sp.end-sp.start) && overlap > 0 {
						hide(i, i+n)
					}
				}
			}
		}
	}
}
