package pglock_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// secretPasswords hold the characters connection strings escape or quote:
// '%', '@', '=', quotes and spaces.
var secretPasswords = []string{`S3C%RE7pw`, `P@ss=W0rd 'Q"9 x`, `Z%zz@Y=8'K\7" M`}

// secretDB is the database name of the malformed connection strings: no
// server is reached through them, so a message that names it quotes the
// connection string.
const secretDB = "dbZ9Qsecret"

// secretDSN is one connection string of the test.
type secretDSN struct {
	name, dsn string
	malformed bool // no server is reached through it
	quoted    bool // lib/pq quotes it whole in its error
}

// secretDSNs returns connection strings holding pw: valid ones, in URL and
// key=value form, for the test server (whose trust authentication ignores
// the password), and malformed ones of every kind lib/pq quotes back.
func secretDSNs(t *testing.T, pw string) []secretDSN {
	t.Helper()
	host, port, err := net.SplitHostPort(srv.Addr())
	require.NoError(t, err)
	kv := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pw)
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", pw), Host: srv.Addr(), Path: "/postgres", RawQuery: "sslmode=disable"}
	return []secretDSN{
		{"url", u.String(), false, false},
		{"keyvalue", fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable password='%s'", host, port, kv), false, false},
		{"bad-scheme", "postgress://postgres:" + pw + "@" + srv.Addr() + "/" + secretDB, true, true},
		{"bad-escape", "postgres://postgres:" + pw + "%zz@" + srv.Addr() + "/" + secretDB, true, true},
		{"unterminated-quote", "host=" + host + " dbname=" + secretDB + " password='" + kv, true, false},
		{"missing-equals", "host=" + host + " password='" + kv + "' " + secretDB, true, false},
	}
}

// messages collects every message a client gives: errors and log records.
type messages struct {
	mu   sync.Mutex
	errs []string
	log  bytes.Buffer
}

func (m *messages) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.Write(p)
}

func (m *messages) add(err error) {
	if err != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.errs = append(m.errs, err.Error(), fmt.Sprintf("%+v", err))
	}
}

func (m *messages) addText(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errs = append(m.errs, s)
}

func (m *messages) logger() pglock.ClientOption {
	return pglock.WithSlog(slog.New(slog.NewTextHandler(m, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// all returns every message, one per line.
func (m *messages) all() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.errs, "\n") + "\n" + m.log.String()
}

// assertNoSecret fails when text holds pw, written or escaped, or any
// three bytes of it with a capital or one of % @ = \ (prose, table names
// and numbers have none such), or,
// for a connection string the driver quotes whole, its database name.
func assertNoSecret(t *testing.T, text, pw string, d secretDSN) {
	t.Helper()
	for _, form := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw), url.UserPassword("u", pw).String()[2:]} {
		assert.NotContains(t, text, form, "%s: the password leaked", d.name)
	}
	for i := 0; i+3 <= len(pw); i++ {
		if piece := pw[i : i+3]; strings.ContainsAny(piece, `ABCDEFGHIJKLMNOPQRSTUVWXYZ%@=\`) {
			assert.NotContains(t, text, piece, "%s: a piece of the password leaked", d.name)
		}
	}
	if d.quoted {
		assert.NotContains(t, text, secretDB, "%s: the connection string leaked", d.name)
	}
}

// TestNoPasswordInErrorsOrLogs gives clients connection strings holding a
// password, valid and malformed, as the *sql.DB's and as WithSessionDSN,
// under both drivers, makes every call, and searches every error, every
// log record (debug level) and Stats for the password.
func TestNoPasswordInErrorsOrLogs(t *testing.T) {
	fullSuiteOnly(t)
	t.Parallel()
	for _, pw := range secretPasswords {
		for _, d := range secretDSNs(t, pw) {
			for _, driverName := range driverNames {
				t.Run(d.name+"/"+driverName, func(t *testing.T) {
					var m messages
					db, err := sql.Open(driverName, d.dsn)
					m.add(err)
					if err == nil {
						defer db.Close()
						everyCall(t, db, &m)
					}
					everyCallWithSession(t, driverName, d, &m)
					assertNoSecret(t, m.all(), pw, d)
				})
			}
		}
	}
}

// everyCall makes every call of a client on db, recording what it says.
func everyCall(t *testing.T, db *sql.DB, m *messages) {
	t.Helper()
	c, err := pglock.New(db, pglock.WithCustomTable(tableName(t)), m.logger(),
		pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	m.add(err)
	if err != nil {
		return
	}
	m.add(c.TryCreateTable())
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	l, err := c.AcquireContext(ctx, "secret", pglock.KeepOnRelease())
	m.add(err)
	if err == nil {
		m.add(c.SendHeartbeat(ctx, l))
		m.add(c.ReleaseContext(ctx, l))
	}
	_, err = c.GetContext(ctx, "secret")
	m.add(err)
	_, err = c.GetAllLocksContext(ctx)
	m.add(err)
	m.add(c.ForceRelease(ctx, "secret"))
	m.add(c.Do(ctx, "secret", func(context.Context, *pglock.Lock) error { return nil }))
	m.add(c.DropTable())
	m.add(c.Close(ctx))
	m.addText(fmt.Sprintf("%+v", c.Stats()))
}

// everyCallWithSession makes every call of a client on db whose sessions
// use d; lib/pq's New refuses a connection string it cannot parse, and
// keeps the driver's error reachable.
func everyCallWithSession(t *testing.T, driverName string, d secretDSN, m *messages) {
	t.Helper()
	db := openDriver(t, driverName)
	c, err := pglock.New(db, pglock.WithSessionDSN(d.dsn))
	if d.malformed && driverName == "postgres" {
		require.Error(t, err)
		var urlErr *url.Error
		if d.name == "bad-escape" {
			assert.ErrorAs(t, err, &urlErr, "the driver's error is no longer reachable")
		}
	}
	m.add(err)
	if err != nil {
		return
	}
	require.NoError(t, c.Close(bg))
	c, _ = newClientTable(t, db, pglock.WithSessionDSN(d.dsn), m.logger(),
		pglock.WithLeaseDuration(2*time.Second), pglock.WithHeartbeatFrequency(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	l, err := c.AcquireContext(ctx, "secret")
	m.add(err)
	if err == nil {
		waiter := acquireAsync(ctx, c, "secret") // a waiter listens on a session
		time.Sleep(300 * time.Millisecond)       // heartbeats on sessions
		m.add(c.ReleaseContext(ctx, l))
		if r := <-waiter; r.err == nil {
			m.add(c.ReleaseContext(ctx, r.l))
		} else {
			m.add(r.err)
		}
	}
	m.add(c.Close(ctx))
}
