package pglock

// extraStatements are the statements of the election (election.go) and of the
// operator's override (force.go). Like statements, they are built once in New
// with the table name quoted there; values are always $n parameters.
type extraStatements struct {
	// proclaim replaces the data of a held row if it still carries our RVN,
	// without bumping the RVN. Rows affected: 1 if stored, 0 if the lock was
	// lost.
	proclaim string
	// forceRelease deletes a row whatever its RVN and notifies waiters. It
	// returns the name when a row was deleted, no row otherwise.
	forceRelease string
}

func newExtraStatements(id identifier) extraStatements {
	t := id.quoted()
	return extraStatements{
		proclaim: `UPDATE ` + t + ` SET data = $3::bytea
WHERE name = $1::text AND record_version_number = $2::bigint`,

		forceRelease: `WITH released AS (
	DELETE FROM ` + t + ` WHERE name = $1::text RETURNING name
) SELECT released.name FROM released CROSS JOIN LATERAL pg_notify($2::text, released.name::text)`,
	}
}
