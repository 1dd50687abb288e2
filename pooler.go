package pglock

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// A pooler in transaction mode (PgBouncer's pool_mode = transaction) hands
// each transaction, and each statement outside one, to whichever server
// connection is free. lib/pq, unless binary_parameters is set, sends a
// statement with parameters in two round trips: parse, then bind and
// execute. The pooler may run them on different server connections: the
// bind then finds no unnamed statement there (SQLSTATE 26000), or finds
// another client's with another number of parameters (08P01). Either way
// the statement did not run. The client then runs it again, and every later
// statement, on connections of its own opened with binary parameters, which
// send each statement in one round trip (see keeper.splitSeen), and logs
// once why.

// isSplit reports whether err is lib/pq's report of a statement whose
// parse and bind a pooler ran on different server connections.
func isSplit(err error) bool {
	var pe *pq.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "26000": // invalid_sql_statement_name: no unnamed statement
		return true
	case "08P01": // protocol_violation: another client's unnamed statement
		return strings.HasPrefix(pe.Message, "bind message supplies")
	}
	return false
}

// poolerHint explains a split statement (see isSplit) or SQLSTATE 26000 on
// a statement of the client.
const poolerHint = "a pooler in transaction mode ran the statement's parse and bind on different server connections: " +
	"with lib/pq add binary_parameters=yes to the connection string; with pgx use default_query_exec_mode=exec or simple_protocol"

// splitLog is what the client logs, once, when it first meets a split
// statement and from then on runs its statements on its own connections.
const splitLog = "a pooler in transaction mode ran a statement's parse and bind on different server connections " +
	"(lib/pq without binary_parameters); the statement did not run, and this client now runs its statements " +
	"on connections of its own with binary parameters: add binary_parameters=yes to the connection string"

// withPoolerHint adds poolerHint to an error that calls for it.
func withPoolerHint(err error) error {
	if isSplit(err) || sqlState(err) == "26000" {
		return fmt.Errorf("%w (%s)", err, poolerHint)
	}
	return err
}
