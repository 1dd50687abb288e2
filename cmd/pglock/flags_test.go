package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCLIFlagErrorsNameTheFlag checks that a bad flag value is reported
// with the flag's name, the value, and the form expected.
func TestCLIFlagErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"run", "x", "--timeout", "-1s", "--", "true"}, []string{`"-1s"`, "--timeout", "not be negative"}},
		{[]string{"run", "x", "--grace", "-2s", "--", "true"}, []string{`"-2s"`, "--grace", "not be negative"}},
		{[]string{"run", "x", "--lease", "5", "--", "true"}, []string{`"5"`, "--lease", "5s"}},
		{[]string{"run", "x", "--lease", "50ms", "--", "true"}, []string{`"50ms"`, "--lease", "at least 100ms"}},
		{[]string{"--exit-timeout", "0", "ls"}, []string{`"0"`, "--exit-timeout", "positive", "5s"}},
		{[]string{"--table", "", "ls"}, []string{`""`, "--table", "empty"}},
		{[]string{"ls", "--table="}, []string{"--table", "empty"}},
	} {
		r := cli(t, tc.args...)
		assert.Equal(t, exitError, r.code, "%q", tc.args)
		for _, w := range tc.want {
			assert.Contains(t, r.stderr, w, "%q", tc.args)
		}
		assert.NotContains(t, r.stderr, "parse error", "%q", tc.args)
	}
}

// TestCLIMessagesHaveOnePrefix checks that pglock's messages start with
// "pglock: " once, also where they carry the library's errors.
func TestCLIMessagesHaveOnePrefix(t *testing.T) {
	t.Parallel()
	table := cliTable(t)
	cliInit(t, table)
	for _, args := range [][]string{{"get", ""}, {"release", "", "--force"}, {"run", "", "--", "true"}} {
		r := cli(t, append([]string{"--table", table}, args...)...)
		assert.Equal(t, exitError, r.code, "%q", args)
		assert.Contains(t, r.stderr, "pglock: ", "%q", args)
		assert.NotContains(t, r.stderr, "pglock: pglock:", "%q", args)
		assert.NotContains(t, r.stderr, ": pglock: ", "%q", args)
	}
}

// TestBuiltBinaryIsIgnored checks that the binary `go build ./cmd/pglock`
// leaves at the repository's root is in .gitignore.
func TestBuiltBinaryIsIgnored(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../.gitignore")
	require.NoError(t, err)
	assert.Contains(t, strings.Split(string(b), "\n"), "/pglock")
}
