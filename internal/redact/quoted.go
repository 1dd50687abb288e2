package redact

import (
	"strconv"
	"strings"
)

// copyRun is the shortest run of bytes a quoted fragment may share with a
// connection string before it counts as a copy of it (one with its
// password masked, as pgx writes them, is no longer a substring).
const copyRun = 12

// quoted hides the quoted fragments of msg ("..." or `...`) that come
// from a connection string: drivers quote the piece they could not parse,
// which may be the rest of the string or a piece of its password.
func (s *Secrets) quoted(msg string, hide func(start, end int)) {
	for from := 0; ; {
		i := strings.IndexAny(msg[from:], "\"`")
		if i < 0 {
			return
		}
		i += from
		end := closingQuote(msg, i)
		if end < 0 {
			return
		}
		if s.fromDSN(msg[i+1:end], msg[i]) {
			hide(i+1, end)
		}
		from = end + 1
	}
}

// closingQuote returns the index of the quote closing the one at msg[i],
// or -1. Inside double quotes a backslash escapes the next byte, as %q
// writes them.
func closingQuote(msg string, i int) int {
	q := msg[i]
	for j := i + 1; j < len(msg); j++ {
		switch {
		case msg[j] == q:
			return j
		case q == '"' && msg[j] == '\\':
			j++
		}
	}
	return -1
}

// fromDSN reports whether a quoted fragment comes from one of the
// connection strings: it overlaps where a password stands, it is a piece
// of a string whose password could not be located, or it shares a long
// run of bytes with one.
func (s *Secrets) fromDSN(frag string, quote byte) bool {
	forms := []string{frag}
	if quote == '"' {
		if u, err := strconv.Unquote(`"` + frag + `"`); err == nil && u != frag {
			forms = append(forms, u)
		}
	}
	for _, f := range forms {
		for k, dsn := range s.dsns {
			if f != "" && (overlapsPassword(dsn, s.spans[k], f) || sharesRun(dsn, f)) {
				return true
			}
		}
	}
	return false
}

// overlapsPassword reports whether f occurs in dsn over one of its
// password spans, or, when none was found, occurs in dsn at all with at
// least minSecret bytes.
func overlapsPassword(dsn string, spans []span, f string) bool {
	if len(spans) == 0 {
		return len(f) >= minSecret && strings.Contains(dsn, f)
	}
	for from := 0; ; {
		i := strings.Index(dsn[from:], f)
		if i < 0 {
			return false
		}
		start := from + i
		for _, sp := range spans {
			if start < sp.end && sp.start < start+len(f) {
				return true
			}
		}
		from = start + 1
	}
}

// sharesRun reports whether f and dsn share a run of copyRun bytes.
func sharesRun(dsn, f string) bool {
	for i := 0; i+copyRun <= len(f); i++ {
		if strings.Contains(dsn, f[i:i+copyRun]) {
			return true
		}
	}
	return false
}
