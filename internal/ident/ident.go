// Package ident reads and quotes PostgreSQL table names the way pglock's
// WithCustomTable documents them: "locks", "myschema.locks", `"My Table"`
// or `s."t"`. The library and its command both use it, so that they read a
// name alike. It imports only the standard library, to keep the library's
// import graph small.
package ident

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxBytes is the longest identifier PostgreSQL keeps, NAMEDATALEN-1;
// longer ones it cuts.
const MaxBytes = 63

// Table is a possibly schema-qualified table name, split into its parts as
// PostgreSQL reads them.
type Table struct {
	Schema string // "" when the name is not qualified
	Name   string
}

// Split reads s as one or two dot-separated parts, each a bare word
// ([A-Za-z_][A-Za-z0-9_$]*, folded to lower case) or a non-empty
// double-quoted identifier with "" standing for one quote. Text of any
// other shape is taken whole as the table's name, so that a hostile name
// becomes a strange table name, never SQL. Split never fails; Parse also
// checks that PostgreSQL can hold the name.
func Split(s string) Table {
	parts, ok := splitQualified(s)
	switch {
	case ok && len(parts) == 1:
		return Table{Name: parts[0]}
	case ok && len(parts) == 2:
		return Table{Schema: parts[0], Name: parts[1]}
	}
	return Table{Name: s}
}

// Error says why Parse refused a name.
type Error struct {
	// Input is the text given to Parse.
	Input string
	// Reason is what is wrong with it, or "" when the text cannot name
	// anything at all: it is empty, holds a NUL byte or is not UTF-8.
	Reason string
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("invalid table name %q", e.Input)
	}
	return fmt.Sprintf("invalid table name %q (%s)", e.Input, e.Reason)
}

// Parse splits s as Split does, and returns an *Error when PostgreSQL
// cannot hold the name: s is empty, holds a NUL byte or is not UTF-8, or a
// part is longer than MaxBytes (PostgreSQL would cut it, and two names
// would become one table).
func Parse(s string) (Table, error) {
	if s == "" || strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
		return Table{}, &Error{Input: s}
	}
	t := Split(s)
	if t.Name == "" || len(t.Name) > MaxBytes || len(t.Schema) > MaxBytes {
		return Table{}, &Error{Input: s, Reason: fmt.Sprintf("each part must be 1 to %d bytes", MaxBytes)}
	}
	return t, nil
}

// Quoted returns the name ready for SQL text, each part quoted by Quote.
func (t Table) Quoted() string {
	if t.Schema == "" {
		return Quote(t.Name)
	}
	return Quote(t.Schema) + "." + Quote(t.Name)
}

// Quote returns s as a double-quoted identifier, each " doubled, so that
// no text can end it early. PostgreSQL's text cannot hold a NUL byte, so s
// is cut at its first one, as lib/pq's QuoteIdentifier cuts it.
func Quote(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// splitQualified splits s into dot-separated identifiers (see Split). ok is
// false when s is not one or two of them.
func splitQualified(s string) (parts []string, ok bool) {
	for {
		part, rest, ok := nextIdentifier(s)
		if !ok {
			return nil, false
		}
		parts = append(parts, part)
		switch {
		case rest == "":
			return parts, len(parts) <= 2
		case rest[0] != '.':
			return nil, false
		}
		s = rest[1:]
	}
}

// nextIdentifier reads the identifier s starts with, and returns it and
// the text after it; ok is false when s does not start with one.
func nextIdentifier(s string) (id, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		n := 0
		for n < len(s) && isBareByte(s[n], n == 0) {
			n++
		}
		return strings.ToLower(s[:n]), s[n:], n > 0
	}
	var b strings.Builder
	s = s[1:]
	for {
		end := strings.IndexByte(s, '"')
		if end < 0 {
			return "", "", false // no closing quote
		}
		b.WriteString(s[:end])
		s = s[end+1:]
		if !strings.HasPrefix(s, `"`) {
			return b.String(), s, b.Len() > 0
		}
		b.WriteByte('"') // "" inside quotes stands for one "
		s = s[1:]
	}
}

// isBareByte reports whether c may stand in an unquoted identifier, at its
// start when first. Only ASCII counts: a name with any other byte outside
// quotes is not of Split's shape, and is taken whole.
func isBareByte(c byte, first bool) bool {
	switch {
	case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	case '0' <= c && c <= '9', c == '$':
		return !first
	}
	return false
}
