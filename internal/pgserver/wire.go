package pgserver

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// A minimal client of the PostgreSQL frontend/backend protocol (version 3),
// enough to check that a server accepts connections and to run simple
// statements without a driver. It supports trust, cleartext password and md5
// authentication, without TLS.

// connConfig is what simpleQuery needs to connect.
type connConfig struct {
	addr     string
	user     string
	password string
	database string
}

// PGError is an error reported by the server.
type PGError struct {
	Severity string
	Code     string // SQLSTATE
	Message  string
}

func (e *PGError) Error() string {
	return fmt.Sprintf("pgserver: server error: %s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
}

// parseDSN parses a DSN in URL form (postgres://user:pass@host:port/db).
func parseDSN(dsn string) (connConfig, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return connConfig{}, fmt.Errorf("pgserver: DSN %q is not in the URL form postgres://user@host:port/db", redact(dsn))
	}
	cfg := connConfig{user: "postgres", database: strings.TrimPrefix(u.Path, "/")}
	if u.User != nil {
		cfg.user = u.User.Username()
		cfg.password, _ = u.User.Password()
	}
	if cfg.database == "" {
		cfg.database = cfg.user
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "5432"
	}
	cfg.addr = net.JoinHostPort(host, port)
	if mode := u.Query().Get("sslmode"); mode == "require" || mode == "verify-ca" || mode == "verify-full" {
		return connConfig{}, fmt.Errorf("pgserver: DSN %q requires TLS, which the built-in client does not support", redact(dsn))
	}
	return cfg, nil
}

// replaceDatabase returns dsn with its database replaced by name.
func replaceDatabase(dsn, name string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("pgserver: %w", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

func redact(dsn string) string {
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
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// simpleQuery connects, authenticates, runs query with the simple query
// protocol unless it is empty, and disconnects. An empty query just checks
// that the server accepts connections.
func simpleQuery(cfg connConfig, query string) (err error) {
	conn, err := net.DialTimeout("tcp", cfg.addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		return err
	}
	w := &msgWriter{}
	// StartupMessage: length, protocol 3.0, key/value pairs, terminator.
	w.int32(196608)
	w.cstring("user")
	w.cstring(cfg.user)
	w.cstring("database")
	w.cstring(cfg.database)
	w.cstring("application_name")
	w.cstring("pgtest")
	w.byte(0)
	if _, err := conn.Write(w.message(0)); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	if err := startup(conn, r, cfg); err != nil {
		return err
	}
	defer func() {
		w := &msgWriter{}
		_, _ = conn.Write(w.message('X')) // Terminate is a courtesy; the conn closes anyway
	}()
	if query == "" {
		return nil
	}
	w = &msgWriter{}
	w.cstring(query)
	if _, err := conn.Write(w.message('Q')); err != nil {
		return err
	}
	var qerr error
	for {
		typ, body, err := readMessage(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'E':
			if qerr == nil {
				qerr = parseError(body)
			}
		case 'Z':
			return qerr
		}
	}
}

// startup handles authentication up to the first ReadyForQuery.
func startup(conn net.Conn, r *bufio.Reader, cfg connConfig) error {
	for {
		typ, body, err := readMessage(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'E':
			return parseError(body)
		case 'R':
			if len(body) < 4 {
				return errors.New("pgserver: short authentication message")
			}
			switch code := binary.BigEndian.Uint32(body); code {
			case 0: // AuthenticationOk
			case 3: // cleartext password
				w := &msgWriter{}
				w.cstring(cfg.password)
				if _, err := conn.Write(w.message('p')); err != nil {
					return err
				}
			case 5: // md5 password
				if len(body) < 8 {
					return errors.New("pgserver: short md5 authentication message")
				}
				inner := md5.Sum([]byte(cfg.password + cfg.user))
				outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), body[4:8]...))
				w := &msgWriter{}
				w.cstring("md5" + hex.EncodeToString(outer[:]))
				if _, err := conn.Write(w.message('p')); err != nil {
					return err
				}
			default:
				return fmt.Errorf("pgserver: authentication method %d not supported by the built-in client (use trust, password or md5)", code)
			}
		case 'Z':
			return nil
		}
	}
}

func readMessage(r *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > 1<<24 {
		return 0, nil, fmt.Errorf("pgserver: bad message length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

func parseError(body []byte) error {
	e := &PGError{}
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		body = body[1:]
		i := strings.IndexByte(string(body), 0)
		if i < 0 {
			break
		}
		val := string(body[:i])
		body = body[i+1:]
		switch field {
		case 'S':
			e.Severity = val
		case 'C':
			e.Code = val
		case 'M':
			e.Message = val
		}
	}
	return e
}

type msgWriter struct{ buf []byte }

func (w *msgWriter) byte(b byte) { w.buf = append(w.buf, b) }

func (w *msgWriter) int32(v uint32) { w.buf = binary.BigEndian.AppendUint32(w.buf, v) }

func (w *msgWriter) cstring(s string) {
	w.buf = append(w.buf, s...)
	w.buf = append(w.buf, 0)
}

// message frames the body with its type (0 for none) and length.
func (w *msgWriter) message(typ byte) []byte {
	var out []byte
	if typ != 0 {
		out = append(out, typ)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(w.buf)+4))
	return append(out, w.buf...)
}
