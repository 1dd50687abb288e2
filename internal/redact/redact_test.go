package redact_test

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/lib/pq"

	"cirello.io/pglock/internal/redact"
)

// TestStringScrubsDriverErrors feeds lib/pq the malformed connection
// strings it quotes back in its errors, and checks that neither the
// password, nor any three bytes of it, nor the connection string survive.
func TestStringScrubsDriverErrors(t *testing.T) {
	const pw = `S3C%RE7pw`
	for _, dsn := range []string{
		"postgress://postgres:" + pw + "@127.0.0.1:56300/clitest",
		"postgres://postgres:" + pw + "@127.0.0.1:56300/clitest",
		"postgres://postgres@127.0.0.1:56300/clitest?password=" + pw + "&sslmode=bogus",
		"host=127.0.0.1 password='" + pw + " dbname=clitest",
		"host=127.0.0.1 password=" + pw + " dbname",
		"host=127.0.0.1 password = '" + pw + "' sslmode=bogus",
	} {
		_, err := pq.NewConfig(dsn)
		if err == nil {
			t.Fatalf("%q parsed", dsn)
		}
		s := redact.New(dsn)
		got := s.Error(err)
		checkClean(t, got.Error(), pw, dsn)
		var pqErr *url.Error
		if errors.As(err, &pqErr) && !errors.As(got, &pqErr) {
			t.Errorf("%q: the scrubbed error no longer unwraps to *url.Error", dsn)
		}
		if !errors.Is(got, err) {
			t.Errorf("%q: the scrubbed error does not wrap the driver's", dsn)
		}
	}
}

// TestStringKeepsOtherText checks that text unrelated to the secrets stays.
func TestStringKeepsOtherText(t *testing.T) {
	s := redact.New("postgres://u:hunter2@db.internal/app")
	msg := `pq: relation "locks" does not exist; missing "=" after key`
	if got := s.String(msg); got != msg {
		t.Errorf("got %q", got)
	}
	var nilSecrets *redact.Secrets
	if got := nilSecrets.String("x"); got != "x" {
		t.Errorf("nil secrets changed the text: %q", got)
	}
	err := fmt.Errorf("w: %w", driver.ErrBadConn)
	if got := s.Error(err); got != err { //nolint:errorlint // identity: nothing to scrub
		t.Errorf("an error without secrets was wrapped: %v", got)
	}
}

// TestAddPassword scrubs a password given apart, as $PGPASSWORD.
func TestAddPassword(t *testing.T) {
	s := redact.New()
	s.AddPassword("pa ss'w@rd")
	if got := s.String("auth failed for pa ss'w@rd"); strings.Contains(got, "w@rd") {
		t.Errorf("got %q", got)
	}
}

// checkClean fails when msg holds pw, any three bytes of it, or dsn.
func checkClean(t *testing.T, msg, pw, dsn string) {
	t.Helper()
	if strings.Contains(msg, dsn) {
		t.Errorf("%q: message holds the connection string: %s", dsn, msg)
	}
	for i := 0; i+3 <= len(pw); i++ {
		if strings.Contains(msg, pw[i:i+3]) {
			t.Errorf("%q: message holds %q of the password: %s", dsn, pw[i:i+3], msg)
		}
	}
	t.Logf("%s", msg)
}
