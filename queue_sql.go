package pglock

// queueStatements holds the SQL of the fair queue (queue.go), built once in
// New with the queue table's name quoted there; like every statement, they
// take their values as $n parameters.
type queueStatements struct {
	// table is the queue table's quoted name, the parameter of exists and
	// of the acquire statements' look-up of the queue.
	table string
	// exists reports whether the queue table ($1, its quoted name) exists.
	exists string
	// create and createIfNotExists make the queue table; drop drops it.
	create, createIfNotExists, drop string
	// acquire is statements.acquire for a waiting Acquire: it takes the
	// row only when no other client queues ahead of this one. Beyond
	// acquire's parameters ($1 to $6): the client's id $7, its place $8
	// (the lowest ticket of its waiters; NULL before it queues, when every
	// entry is ahead), the ticket $9 its entry leaves with on success, and
	// the entries ($10 tickets, $11 RVNs) the waiter watched unchanged for
	// a place lease, which are deleted and do not count as ahead; the
	// client's other entries of the name ($12 tickets) get new RVNs, as a
	// look gives them. Its rows
	// are acquire's, with an eighth column, whether entries are ahead, and
	// a ninth, whether the entry $9 is still queued (true when the lock was
	// taken). A free row refused for entries ahead gives one row (false, 0,
	// NULL, false, NULL, false, false, true, seated).
	acquire string
	// acquireNotify is acquire that notifies the channel $13 with the name
	// when it takes the lock, as statements.acquireNotify.
	acquireNotify string
	// join inserts an entry for name $1, client $2, and returns its ticket,
	// drawn from the sequence $3 as its first RVN is.
	join string
	// leave deletes the entry of name $1 with ticket $2.
	leave string
	// leaveStray deletes the entries of name $1 and client $2 but those
	// with the tickets $3: those of waits that gave up before they knew
	// their ticket.
	leaveStray string
	// leaveAll deletes every entry of client $1.
	leaveAll string
	// release, releaseKeep and forceRelease are statements' own, whose
	// notification also carries the lowest ticket queued for the name
	// (queueNotify).
	release, releaseKeep, forceRelease string
	// look keeps the client's entries of name $1 (client $2, tickets $4)
	// alive by drawing them new RVNs, deletes the entries ($5 tickets, $6
	// RVNs) watched unchanged for a place lease, and returns the tickets
	// kept, the first 16 entries of other clients ahead of place $3 (their
	// tickets and RVNs), and the lock row's RVN and owner. Sequence $7.
	look string
}

// queueAhead is the entries of other clients before the place $8 (or all
// of them when $8 is NULL), less those in the skipped pairs ($10, $11).
func queueAhead(q, client, place, skipT, skipR string) string {
	return `SELECT e.ticket, e.record_version_number FROM ` + q + ` e
	WHERE e.name = $1::text AND e.client <> ` + client + `::text AND (` + place + `::bigint IS NULL OR e.ticket < ` + place + `::bigint)
	AND NOT EXISTS (SELECT 1 FROM unnest(` + skipT + `::bigint[], ` + skipR + `::bigint[]) s(t, r) WHERE s.t = e.ticket AND s.r = e.record_version_number)`
}

// queueSkip deletes the skipped pairs of entries of $1.
func queueSkip(q, skipT, skipR string) string {
	return `DELETE FROM ` + q + ` e USING unnest(` + skipT + `::bigint[], ` + skipR + `::bigint[]) s(t, r)
	WHERE e.name = $1::text AND e.ticket = s.t AND e.record_version_number = s.r`
}

// queueNotify is the notification of a release of released.name on the
// channel $n: the name alone when nobody queues for it, as every client
// reads it; else the record separator, the lowest ticket queued, the
// separator again and the name (see parsePayload), so that only the first
// in line tries.
func queueNotify(q, channel string) string {
	return ` SELECT released.name FROM released CROSS JOIN LATERAL pg_notify(` + channel + `::text,
	COALESCE(chr(30) || (SELECT min(e.ticket) FROM ` + q + ` e WHERE e.name = released.name)::text || chr(30), '') || released.name::text)`
}

func newQueueStatements(id identifier) queueStatements {
	t, q := id.quoted(), id.queue().quoted()
	columns := ` (
	name text NOT NULL,
	ticket bigint NOT NULL,
	client text NOT NULL,
	record_version_number bigint NOT NULL,
	PRIMARY KEY (name, ticket)
)`
	return queueStatements{
		table:             q,
		exists:            `SELECT to_regclass($1::text) IS NOT NULL`,
		create:            `CREATE TABLE ` + q + columns,
		createIfNotExists: `CREATE TABLE IF NOT EXISTS ` + q + columns,
		drop:              `DROP TABLE IF EXISTS ` + q,
		acquire:           queueAcquireSQL(t, q, ""),
		acquireNotify:     queueAcquireSQL(t, q, " CROSS JOIN LATERAL pg_notify($13::text, $1::text)"),
		release: `WITH released AS (
	DELETE FROM ` + t + ` WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text
	RETURNING name
)` + queueNotify(q, "$3"),
		releaseKeep: `WITH released AS (
	UPDATE ` + t + ` SET record_version_number = NULL
	WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text RETURNING name
)` + queueNotify(q, "$3"),
		forceRelease: `WITH released AS (
	DELETE FROM ` + t + ` WHERE name = $1::text RETURNING name
)` + queueNotify(q, "$2"),
		join: `INSERT INTO ` + q + ` (name, ticket, client, record_version_number)
	SELECT $1::text, nextval($3::regclass), $2::text, nextval($3::regclass) RETURNING ticket`,
		leave:      `DELETE FROM ` + q + ` WHERE name = $1::text AND ticket = $2::bigint`,
		leaveAll:   `DELETE FROM ` + q + ` WHERE client = $1::text`,
		leaveStray: `DELETE FROM ` + q + ` WHERE name = $1::text AND client = $2::text AND ticket <> ALL($3::bigint[])`,
		look: `WITH kept AS (
	UPDATE ` + q + ` SET record_version_number = nextval($7::regclass)
	WHERE name = $1::text AND client = $2::text AND ticket = ANY($4::bigint[]) RETURNING ticket
), skipped AS (` + queueSkip(q, "$5", "$6") + `
), ahead AS (` + queueAhead(q, "$2", "$3", "$5", "$6") + `
	ORDER BY e.ticket LIMIT 16
)
SELECT ARRAY(SELECT ticket FROM kept), ARRAY(SELECT ticket FROM ahead ORDER BY ticket),
	ARRAY(SELECT record_version_number FROM ahead ORDER BY ticket),
	(SELECT record_version_number FROM ` + t + ` WHERE name = $1::text),
	(SELECT owner FROM ` + t + ` WHERE name = $1::text)`,
	}
}

// queueAcquireSQL is queueStatements.acquire on the quoted table t and
// queue q; notify, when not empty, is joined to the row acquired.
func queueAcquireSQL(t, q, notify string) string {
	return `WITH current AS (
	SELECT record_version_number, owner FROM ` + t + ` WHERE name = $1::text
), ahead AS (` + queueAhead(q, "$7", "$8", "$10", "$11") + `
	LIMIT 1
)` + acquiredCTE(t, " AND NOT EXISTS (SELECT 1 FROM ahead)") + `, skipped AS (` + queueSkip(q, "$10", "$11") + `
), leaving AS (
	DELETE FROM ` + q + ` WHERE name = $1::text AND ticket = $9::bigint AND EXISTS (SELECT 1 FROM acquired)
), kept AS (
	UPDATE ` + q + ` SET record_version_number = nextval($6::regclass)
	WHERE name = $1::text AND client = $7::text AND ticket = ANY($12::bigint[])
	AND (ticket IS DISTINCT FROM $9::bigint OR NOT EXISTS (SELECT 1 FROM acquired))
	RETURNING ticket
)
SELECT true, record_version_number, data, ours, NULL::text, inserted,
	EXISTS (SELECT 1 FROM current WHERE record_version_number IS NOT NULL), false, true FROM acquired` + notify + `
UNION ALL
SELECT false, record_version_number, NULL::bytea, false, owner::text, false, false, EXISTS (SELECT 1 FROM ahead),
	EXISTS (SELECT 1 FROM kept WHERE kept.ticket = $9::bigint) FROM current
WHERE record_version_number IS NOT NULL AND NOT EXISTS (SELECT 1 FROM acquired)
UNION ALL
SELECT false, 0, NULL::bytea, false, NULL::text, false, false, true, EXISTS (SELECT 1 FROM kept WHERE kept.ticket = $9::bigint)
WHERE EXISTS (SELECT 1 FROM ahead) AND NOT EXISTS (SELECT 1 FROM acquired)
	AND NOT EXISTS (SELECT 1 FROM current WHERE record_version_number IS NOT NULL)`
}
