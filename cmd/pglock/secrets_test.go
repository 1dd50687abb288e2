package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cliPasswords hold the characters connection strings escape or quote:
// '%', '@', '=', quotes and spaces.
var cliPasswords = []string{`S3C%RETpw`, `P@ss=W0rd 'Q"9 x`, `Z%zz@Y=8'K\7" M`}

// cliSecretDB is the database of the malformed connection strings.
const cliSecretDB = "dbZ9Qsecret"

// cliDSN is one connection string of the test.
type cliDSN struct {
	name, dsn string
	malformed bool // pglock never reaches a server with it
	quoted    bool // lib/pq quotes it whole in its error
}

// cliDSNs returns connection strings holding pw, valid (for the test
// server, whose trust authentication ignores passwords) and malformed, in
// URL and key=value form.
func cliDSNs(t *testing.T, pw string) []cliDSN {
	t.Helper()
	host, port, err := net.SplitHostPort(srv.Addr())
	require.NoError(t, err)
	kv := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pw), Host: srv.Addr(), Path: "/postgres", RawQuery: "sslmode=disable"}
	return []cliDSN{
		{"url", u.String(), false, false},
		{"keyvalue", fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable password='%s'", host, port, kv), false, false},
		{"bad-scheme", "postgress://postgres:" + pw + "@" + srv.Addr() + "/" + cliSecretDB, true, true},
		{"bad-escape", "postgres://postgres:" + pw + "%zz@" + srv.Addr() + "/" + cliSecretDB, true, true},
		{"unterminated-quote", "host=" + host + " dbname=" + cliSecretDB + " password='" + kv, true, false},
		{"missing-equals", "host=" + host + " password='" + kv + "' " + cliSecretDB, true, false},
	}
}

// cliCommands are the commands of the test, each on table. demo is run
// only where it fails at once: elsewhere it runs for seconds.
func cliCommands(table string, malformed bool) [][]string {
	cmds := [][]string{
		{"init"}, {"ls", "--all"}, {"get", "x"}, {"run", "x", "--", "true"},
		{"release", "x", "--force"}, {"tune"},
	}
	for i := range cmds {
		cmds[i] = append([]string{"--table", table}, cmds[i]...)
	}
	if malformed {
		cmds = append(cmds, []string{"demo"})
	}
	return cmds
}

// TestCLINoPasswordInMessages runs every command with connection strings
// holding a password, valid and malformed, given by --dsn, by $PGLOCK_DSN,
// and as $PGPASSWORD, and searches stderr and stdout for the password.
func TestCLINoPasswordInMessages(t *testing.T) {
	t.Parallel()
	for _, pw := range cliPasswords {
		for _, d := range cliDSNs(t, pw) {
			t.Run(d.name, func(t *testing.T) {
				t.Parallel()
				table := cliTable(t)
				for _, args := range cliCommands(table, d.malformed) {
					byFlag := cliWithEnv(t, cliEnv(), nil, append([]string{"--dsn", d.dsn}, args...)...)
					byEnv := cliWithEnv(t, cliEnv(envDSN+"="+d.dsn), nil, args...)
					for _, r := range []cliResult{byFlag, byEnv} {
						if d.malformed {
							assert.Equal(t, exitError, r.code, "%s %q", d.name, args)
						}
						// The table's random name is no secret, and may hold three bytes of one.
						assertNoCLISecret(t, strings.ReplaceAll(r.stderr+r.stdout, table, "<table>"), pw, d)
					}
				}
				if d.malformed {
					return
				}
				host, port, _ := net.SplitHostPort(srv.Addr())
				bad := cliWithEnv(t, cliEnv("PGHOST="+host, "PGPORT="+port, "PGUSER=postgres", "PGPASSWORD="+pw,
					"PGDATABASE=postgres", "PGSSLMODE=bogus"), nil, "--table", table, "ls")
				assert.Equal(t, exitError, bad.code)
				assertNoCLISecret(t, strings.ReplaceAll(bad.stderr, table, "<table>"), pw, d)
			})
		}
	}
}

// assertNoCLISecret fails when text holds pw, written or escaped, any
// three bytes of it with a capital or one of % @ = \, or a connection string
// lib/pq quoted whole.
func assertNoCLISecret(t *testing.T, text, pw string, d cliDSN) {
	t.Helper()
	for _, form := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw)} {
		assert.NotContains(t, text, form, "%s: the password leaked", d.name)
	}
	for i := 0; i+3 <= len(pw); i++ {
		if piece := pw[i : i+3]; strings.ContainsAny(piece, `ABCDEFGHIJKLMNOPQRSTUVWXYZ%@=\`) {
			assert.NotContains(t, text, piece, "%s: a piece of the password leaked", d.name)
		}
	}
	if d.quoted {
		assert.NotContains(t, text, cliSecretDB, "%s: the connection string leaked", d.name)
	}
}
