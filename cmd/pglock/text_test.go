package main

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSafeText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 0, "plain"},
		{"a\x1b[31mb", 0, "a.[31mb"},
		{"tab\there\nnl", 0, "tab.here.nl"},
		{"bad \xff\xfe utf8", 0, "bad .. utf8"},
		{"rtl \u202e override", 0, "rtl . override"},
		{"héllo wörld", 5, "héllo..."},
		{"12345", 5, "12345"},
		{"", 3, ""},
	} {
		assert.Equal(t, tc.want, safeText(tc.in, tc.max), "%q", tc.in)
	}
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	force := fs.Bool("force", false, "")
	pos, err := parseArgs(fs, []string{"a", "--force", "b", "--", "--c"})
	require.NoError(t, err)
	assert.True(t, *force)
	assert.Equal(t, []string{"a", "b", "--c"}, pos)
}
