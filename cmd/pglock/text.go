package main

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// previewRunes is how much of a lock's data ls and get show.
const previewRunes = 40

// safeText returns s for a terminal: every rune that is not printable
// (control characters, escape sequences, invalid UTF-8, format characters
// such as bidirectional overrides) becomes '.', and when limit > 0 the
// text is cut to limit runes with a trailing "...".
func safeText(s string, limit int) string {
	var b strings.Builder
	n := 0
	for s != "" {
		if limit > 0 && n == limit {
			b.WriteString("...")
			break
		}
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == utf8.RuneError && size <= 1 || !unicode.IsPrint(r) {
			r = '.'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// preview is the short, safe form of a lock's data.
func preview(data []byte) string {
	return safeText(string(data), previewRunes)
}
