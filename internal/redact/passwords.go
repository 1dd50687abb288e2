package redact

import (
	"net/url"
	"strings"
)

// span is where a password stands in a connection string: dsn[start:end].
type span struct{ start, end int }

// passwords returns the passwords dsn holds, as written and unescaped. It
// reads malformed strings too, as far as they go: the password of a URL
// that does not parse is still the text between the user's colon and the
// host's '@'.
func passwords(dsn string) []string {
	var words []string
	for _, sp := range passwordSpans(dsn) {
		raw := dsn[sp.start:sp.end]
		words = append(words, raw)
		if u, err := url.PathUnescape(raw); err == nil && u != raw {
			words = append(words, u)
		}
		if u, err := url.QueryUnescape(raw); err == nil && u != raw {
			words = append(words, u)
		}
		if u := unquoteKV(raw); u != raw {
			words = append(words, u)
		}
	}
	return words
}

// passwordSpans finds the passwords of dsn, in URL form
// (scheme://user:password@host/db?password=...) and in key=value form
// (password=secret, password = 'sec ret').
func passwordSpans(dsn string) []span {
	var spans []span
	isURL := false
	if i := strings.Index(dsn, "://"); i >= 0 {
		isURL = true
		spans = append(spans, userinfoSpans(dsn, i+3)...)
	}
	for from := 0; ; {
		i := strings.Index(dsn[from:], "password")
		if i < 0 {
			return spans
		}
		from += i + len("password")
		if sp, ok := valueSpan(dsn, from, isURL); ok {
			spans = append(spans, sp)
		}
	}
}

// userinfoSpans returns the password of a URL's user information, which
// starts at r: as a URL parser reads it (the authority ends at the first
// '/'), and up to the last '@' before the query, which also covers an
// unescaped '/' in the password.
func userinfoSpans(dsn string, r int) []span {
	var spans []span
	add := func(end int) {
		at := strings.LastIndexByte(dsn[r:end], '@')
		if at < 0 {
			return
		}
		if colon := strings.IndexByte(dsn[r:r+at], ':'); colon >= 0 {
			spans = append(spans, span{r + colon + 1, r + at})
		}
	}
	add(r + indexAny(dsn[r:], "/?#"))
	add(r + indexAny(dsn[r:], "?"))
	return spans
}

// valueSpan reads the value of a password key that ends at from: in a URL
// query up to the next '&'; in key=value form a quoted value up to its
// closing quote, or a bare one up to the next space.
func valueSpan(dsn string, from int, isURL bool) (span, bool) {
	i := from
	for i < len(dsn) && dsn[i] == ' ' {
		i++
	}
	if i == len(dsn) || dsn[i] != '=' {
		return span{}, false
	}
	i++
	if isURL {
		return span{i, i + indexAny(dsn[i:], "&#")}, true
	}
	for i < len(dsn) && dsn[i] == ' ' {
		i++
	}
	if i < len(dsn) && dsn[i] == '\'' {
		j := i + 1
		for j < len(dsn) && dsn[j] != '\'' {
			if dsn[j] == '\\' {
				j++
			}
			j++
		}
		return span{i + 1, min(j, len(dsn))}, true
	}
	return span{i, i + indexAny(dsn[i:], " \t\n")}, true
}

// indexAny is strings.IndexAny, with len(s) when none is found.
func indexAny(s, chars string) int {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return i
	}
	return len(s)
}

// unquoteKV undoes the backslash escapes of a quoted key=value value.
func unquoteKV(s string) string {
	if !strings.ContainsRune(s, '\\') {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
