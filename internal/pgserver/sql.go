package pgserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Timeouts of the client connections the package opens itself.
const (
	// connectTimeout bounds establishing one connection, unless the DSN
	// sets connect_timeout.
	connectTimeout = 5 * time.Second
	// queryTimeout bounds one call of Exec, CreateDatabase or a check.
	queryTimeout = 60 * time.Second
)

// openDB returns a handle on dsn (URL or key=value form, as lib/pq reads
// it) whose connections time out after connectTimeout. The caller closes it.
func openDB(dsn string) (*sql.DB, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgserver: DSN %q: %w", redact(dsn), err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("pgserver: DSN %q: %w", redact(dsn), err)
	}
	return sql.OpenDB(c), nil
}

// execDSN runs query (one or more SQL statements, no parameters) through a
// fresh connection to dsn, within timeout.
func execDSN(dsn, query string, timeout time.Duration) error {
	db, err := openDB(dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := db.ExecContext(ctx, query); err != nil {
		return fmt.Errorf("pgserver: %s: %w", shorten(query), err)
	}
	return nil
}

// queryRowDSN runs query through a fresh connection to dsn and scans its
// first row into dest. It returns sql.ErrNoRows (wrapped) if there is none.
func queryRowDSN(dsn, query string, dest ...any) error {
	db, err := openDB(dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if err := db.QueryRowContext(ctx, query).Scan(dest...); err != nil {
		return fmt.Errorf("pgserver: %s: %w", shorten(query), err)
	}
	return nil
}

// shorten returns query cut to a length fit for an error message.
func shorten(query string) string {
	const limit = 60
	query = strings.Join(strings.Fields(query), " ")
	if len(query) > limit {
		return query[:limit] + "..."
	}
	return query
}

// dsnAddr returns host:port of the first host of dsn, as lib/pq reads it.
func dsnAddr(dsn string) (string, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("pgserver: DSN %q: %w", redact(dsn), err)
	}
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), nil
}

// replaceDatabase returns dsn with its database replaced by name. A DSN in
// URL form gets a new path; a key=value one gets a trailing dbname, which
// overrides an earlier one.
func replaceDatabase(dsn, name string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		if strings.TrimSpace(dsn) == "" {
			return "", errors.New("pgserver: empty DSN")
		}
		quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name)
		return dsn + " dbname='" + quoted + "'", nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// kvPassword matches the password of a key=value DSN.
var kvPassword = regexp.MustCompile(`password\s*=\s*('(\\.|[^'\\])*'|\S+)`)

// redact returns dsn with its password hidden.
func redact(dsn string) string {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return kvPassword.ReplaceAllString(dsn, "password=xxxxx")
	}
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return pq.QuoteIdentifier(s) }

// quoteLiteral quotes an SQL string literal.
func quoteLiteral(s string) string { return pq.QuoteLiteral(s) }
