package main

import (
	"strings"

	"github.com/lib/pq"
)

// quoteTable returns a lock table's name ready for SQL text, each part
// quoted with lib/pq's QuoteIdentifier, so that no name can change the
// statement it is put in. It reads the name as WithCustomTable does: one
// or two dot-separated parts ("locks", "myschema.locks"), each a bare word,
// folded to lower case, or a double-quoted identifier with "" escapes
// (`"My Locks"`); any other text is one identifier, taken as it is.
func quoteTable(name string) string {
	parts, ok := splitQualified(name)
	if !ok {
		parts = []string{name}
	}
	for i, p := range parts {
		parts[i] = pq.QuoteIdentifier(p)
	}
	return strings.Join(parts, ".")
}

// splitQualified splits s into at most two dot-separated identifiers, as
// PostgreSQL reads them. ok is false when s is not of that shape.
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

// nextIdentifier reads the identifier s starts with: a bare word
// ([A-Za-z_][A-Za-z0-9_$]*, folded to lower case) or a non-empty
// double-quoted identifier. It returns the identifier and the text after
// it, or ok false.
func nextIdentifier(s string) (ident, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		i := 0
		for i < len(s) && isBareIdentByte(s[i], i == 0) {
			i++
		}
		return strings.ToLower(s[:i]), s[i:], i > 0
	}
	var b strings.Builder
	for i := 1; ; {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			return "", "", false
		}
		b.WriteString(s[i : i+j])
		i += j + 1
		if i < len(s) && s[i] == '"' { // "" stands for one "
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i:], b.Len() > 0
	}
}

// isBareIdentByte reports whether c may stand in an unquoted identifier, at
// its start when first.
func isBareIdentByte(c byte, first bool) bool {
	switch {
	case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		return true
	case '0' <= c && c <= '9', c == '$':
		return !first
	}
	return false
}
