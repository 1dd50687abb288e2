package pglock

import (
	"strconv"

	"github.com/lib/pq"
)

// LockTableFillfactor is the fillfactor CreateTable and TryCreateTable give
// the lock table: half of each page is kept free for the new row versions
// heartbeats write, so that every heartbeat is a HOT update and the table
// does not grow. Give an existing table the same with
//
//	ALTER TABLE locks SET (fillfactor = 50);
//
// which applies to pages as they are rewritten (VACUUM FULL rewrites them
// all, under an exclusive lock), or with the pglock command's tune.
const LockTableFillfactor = 50

// statements holds every SQL text the client sends, built once in New with
// the table and sequence names quoted there. Values, the sequence's name
// included, are always $n parameters, so no name or setting can change how
// a statement parses.
type statements struct {
	// acquire inserts the row, or takes it over when it is released (NULL
	// RVN) or still carries the RVN the waiter watched for a lease ($5). It
	// returns (true, new RVN, stored data, ours, NULL, inserted, stale,
	// queue) when it took the lock, or (false, current RVN, NULL, false,
	// holder, false, false, queue) when someone else holds it, where queue
	// tells whether the fair queue $7 exists, in one statement and one round
	// trip. inserted tells a row the statement created from one it took
	// over (xmax is 0 only on a freshly inserted row version); stale tells
	// a takeover of a held row whose RVN went stale from one of a free row. A row seen held in the
	// statement's snapshot is not touched at all: no row lock is waited for
	// (a Guard transaction may hold one) and no RVN is drawn from the
	// sequence. The stored data is sent back only when it differs from the
	// caller's (ours is then false), so data does not travel twice.
	acquire string
	// acquireNotify is acquire that also notifies the release channel
	// ($7) with the name when it takes the lock: an election's candidates
	// use it, so that observers learn of a new leader at once. Plain
	// acquires do not pay for a NOTIFY.
	acquireNotify string
	// semAcquire takes one permit of a semaphore in one statement, whatever
	// its number of permits ($2): it creates the marker row ($3, data $4)
	// if missing and, when the marker's data is $4, takes one permit row
	// "$1<i>" (i in 0..$2-1): the first of those missing, released (NULL
	// RVN) or carrying a stale RVN the waiter watched ($8),
	// as acquire takes a lock (data $5, owner $6, replace $7, sequence
	// $9). Its rows, each (kind, permit, rvn, data, ours, owner, inserted,
	// took over): one 'marker' row with the marker's data, and in ours
	// whether it was seen at all (not when it was created concurrently and
	// cannot be seen yet); then one
	// 'acquired' row, or, when none was taken, a 'held' row per permit
	// seen held. Rows seen held are not touched, and ON CONFLICT re-checks
	// a row another statement took meanwhile, so a permit row is taken
	// only when free, released or stale, as with acquire.
	semAcquire string
	// readNames reads the rows of some names ($1) as get does.
	readNames string
	// release deletes the row if it still carries our RVN and owner ($4)
	// and notifies waiters; releaseKeep sets the RVN to NULL instead. Rows
	// affected: 1 if released, 0 if the lock was lost.
	//
	// Every statement that acts on a held lock's row (release, heartbeat,
	// heartbeatBatch, guard, proclaim) matches the owner as well as the
	// RVN: an RVN alone is not unique once a failover to an asynchronous
	// standby lost commits, since the new primary's sequence then hands
	// out again values the old primary had handed out.
	release, releaseKeep string
	// heartbeat bumps one lock's RVN if the row carries our RVN and owner
	// ($4), waiting for row locks.
	heartbeat string
	// heartbeatBatch bumps many locks' RVNs, all of one owner ($4),
	// skipping rows held by an open Guard transaction. Per lock it returns
	// the name, the old RVN, the new RVN (NULL if not bumped) and whether
	// the row still had the old RVN and the owner when the statement began.
	heartbeatBatch string
	// reread reads the RVN and owner of some names, to settle statements
	// whose outcome is unknown.
	reread string
	// get and getAll read rows without acquiring.
	get, getAll string
	// guard share-locks our row (RVN $2, owner $3) inside the caller's
	// transaction; isolation reads the transaction's isolation level.
	guard, isolation string
	// proclaim replaces the data of a held row if it still carries our RVN
	// and owner ($4), without bumping the RVN, and notifies the release
	// channel ($5) so that observers learn of it. Rows affected: 1 if
	// stored, 0 if not.
	proclaim string
	// forceRelease deletes a row whatever its RVN and notifies waiters. It
	// returns the name when a row was deleted.
	forceRelease string
	// resolveTable returns the OID and schema-qualified name of the
	// relation a quoted table name ($1) resolves to through search_path,
	// and whether a table created under that name now would take its place
	// in later look-ups (for an unqualified name, $2: the schema tables are
	// created in comes first in the search path); no row when the name
	// resolves to nothing.
	resolveTable string
	// createTable, createSequence (with ownedBy appended when the sequence
	// can belong to the table), dropTable and dropSequence are the DDL;
	// ifNotExists variants leave existing objects alone.
	createTable, createTableIfNotExists       string
	createSequence, createSequenceIfNotExists string
	ownedBy, dropTable, dropSequence          string
	// listen subscribes a session to the table's release channel; notify
	// sends a payload ($2) on a channel ($1).
	listen, notify string

	// sequence is the quoted name of the RVN sequence, the value of every
	// statement's sequence parameter.
	sequence string
	// channel is the table's release channel, the value of every
	// statement's channel parameter.
	channel string
}

func newStatements(id identifier) statements {
	t := id.quoted()
	seq := id.sequence().quoted()
	releaseNotify := ` SELECT released.name FROM released CROSS JOIN LATERAL pg_notify($3::text, released.name::text)`
	columns := tableColumns()
	return statements{
		acquire:       acquireSQL(t, "", "$7"),
		acquireNotify: acquireSQL(t, " CROSS JOIN LATERAL pg_notify($7::text, $1::text)", "$8"),

		release: `WITH released AS (
	DELETE FROM ` + t + ` WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text
	RETURNING name
)` + releaseNotify,

		releaseKeep: `WITH released AS (
	UPDATE ` + t + ` SET record_version_number = NULL
	WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text RETURNING name
)` + releaseNotify,

		heartbeat: `UPDATE ` + t + ` SET record_version_number = nextval($3::regclass)
WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text
RETURNING record_version_number`,

		heartbeatBatch: heartbeatBatchSQL(t),

		semAcquire: semAcquireSQL(t),

		readNames: `SELECT name, owner, data, record_version_number FROM ` + t + ` WHERE name = ANY($1::text[])`,

		reread: `SELECT name, record_version_number, owner FROM ` + t + ` WHERE name = ANY($1::text[])`,

		get: `SELECT name, owner, data, record_version_number FROM ` + t + ` WHERE name = $1::text`,

		getAll: `SELECT name, owner, data, record_version_number FROM ` + t + ` ORDER BY name`,

		guard: `SELECT 1 FROM ` + t + ` WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $3::text FOR SHARE`,

		isolation: `SELECT current_setting('transaction_isolation')`,

		proclaim: `WITH released AS (
	UPDATE ` + t + ` SET data = $3::bytea
	WHERE name = $1::text AND record_version_number = $2::bigint AND owner = $4::text RETURNING name
) SELECT released.name FROM released CROSS JOIN LATERAL pg_notify($5::text, released.name::text)`,

		forceRelease: `WITH released AS (
	DELETE FROM ` + t + ` WHERE name = $1::text RETURNING name
) SELECT released.name FROM released CROSS JOIN LATERAL pg_notify($2::text, released.name::text)`,

		resolveTable: resolveTableSQL,

		createTable:               `CREATE TABLE ` + t + ` ` + columns,
		createTableIfNotExists:    `CREATE TABLE IF NOT EXISTS ` + t + ` ` + columns,
		createSequence:            `CREATE SEQUENCE ` + seq + ` CYCLE`,
		createSequenceIfNotExists: `CREATE SEQUENCE IF NOT EXISTS ` + seq + ` CYCLE`,
		ownedBy:                   ` OWNED BY ` + t + `.record_version_number`,
		dropTable:                 `DROP TABLE ` + t,
		dropSequence:              `DROP SEQUENCE IF EXISTS ` + seq,

		listen: `LISTEN ` + pq.QuoteIdentifier(id.channel()),
		notify: `SELECT pg_notify($1::text, $2::text)`,

		sequence: seq,
		channel:  id.channel(),
	}
}

// acquireSQL is statements.acquire on the quoted table t; notify, when not
// empty, is joined to the row acquired (statements.acquireNotify). Each
// row also tells whether the table's fair queue, whose quoted name is the
// parameter queue, exists (queue.go): the client learns it with its first
// acquire, at no cost of its own.
func acquireSQL(t, notify, queue string) string {
	return `WITH current AS (
	SELECT record_version_number, owner FROM ` + t + ` WHERE name = $1::text
)` + acquiredCTE(t, "") + `
SELECT true, record_version_number, data, ours, NULL::text, inserted,
	EXISTS (SELECT 1 FROM current WHERE record_version_number IS NOT NULL),
	to_regclass(` + queue + `::text) IS NOT NULL FROM acquired` + notify + `
UNION ALL
SELECT false, record_version_number, NULL::bytea, false, owner::text, false, false,
	to_regclass(` + queue + `::text) IS NOT NULL FROM current
WHERE record_version_number IS NOT NULL AND NOT EXISTS (SELECT 1 FROM acquired)`
}

// acquiredCTE is the acquire statements' "acquired" query on the quoted
// table t: it inserts the row $1 (data $2, owner $3, sequence $6), or
// takes it over when it is released or carries the stale RVN $5 ($4:
// replace its data), unless the row is seen held, or gate (an SQL
// condition joined with AND) is false. It begins with the comma that
// follows the query before it.
func acquiredCTE(t, gate string) string {
	return `, acquired AS (
	INSERT INTO ` + t + ` AS l (name, record_version_number, data, owner)
	SELECT $1::text, nextval($6::regclass), $2::bytea, $3::text
	WHERE NOT EXISTS (
		SELECT 1 FROM current
		WHERE record_version_number IS NOT NULL AND record_version_number IS DISTINCT FROM $5::bigint
	)` + gate + `
	ON CONFLICT (name) DO UPDATE SET
		record_version_number = EXCLUDED.record_version_number,
		data = CASE WHEN $4::boolean THEN EXCLUDED.data ELSE l.data END,
		owner = EXCLUDED.owner
	WHERE l.record_version_number IS NULL OR l.record_version_number = $5::bigint
	RETURNING l.record_version_number,
		CASE WHEN $4::boolean OR l.data IS NOT DISTINCT FROM $2::bytea THEN NULL ELSE l.data END AS data,
		$4::boolean OR l.data IS NOT DISTINCT FROM $2::bytea AS ours,
		l.xmax = 0 AS inserted
)`
}

// semAcquireSQL is statements.semAcquire on the quoted table t. The
// permit rows are looked up by name = ANY(ARRAY(...)), through the primary
// key, as in heartbeatBatchSQL. Statements racing for the same free permit
// queue on its row lock; ON CONFLICT's WHERE then refuses the row to all
// but the first, which return nothing and try again at once.
func semAcquireSQL(t string) string {
	return `WITH marker_new AS (
	INSERT INTO ` + t + ` (name, record_version_number, data, owner)
	VALUES ($3::text, NULL, $4::bytea, $6::text)
	ON CONFLICT (name) DO NOTHING
	RETURNING data
), marker AS (
	SELECT data FROM marker_new
	UNION ALL
	SELECT data FROM ` + t + ` WHERE name = $3::text
), slots AS (
	SELECT i, $1::text || i::text AS name FROM generate_series(0, $2::int - 1) AS i
), current AS (
	SELECT s.i, l.record_version_number, l.owner FROM ` + t + ` l JOIN slots s ON s.name = l.name
	WHERE l.name = ANY(ARRAY(SELECT name FROM slots))
), free AS (
	SELECT s.i, s.name, c.record_version_number IS NOT NULL AS held FROM slots s
	LEFT JOIN current c ON c.i = s.i
	WHERE EXISTS (SELECT 1 FROM marker WHERE data = $4::bytea)
		AND (c.i IS NULL OR c.record_version_number IS NULL OR c.record_version_number = ANY($8::bigint[]))
	ORDER BY s.i
	LIMIT 1
), acquired AS (
	INSERT INTO ` + t + ` AS l (name, record_version_number, data, owner)
	SELECT name, nextval($9::regclass), $5::bytea, $6::text FROM free
	ON CONFLICT (name) DO UPDATE SET
		record_version_number = EXCLUDED.record_version_number,
		data = CASE WHEN $7::boolean THEN EXCLUDED.data ELSE l.data END,
		owner = EXCLUDED.owner
	WHERE l.record_version_number IS NULL OR l.record_version_number = ANY($8::bigint[])
	RETURNING l.record_version_number,
		CASE WHEN $7::boolean OR l.data IS NOT DISTINCT FROM $5::bytea THEN NULL ELSE l.data END AS data,
		$7::boolean OR l.data IS NOT DISTINCT FROM $5::bytea AS ours,
		l.xmax = 0 AS inserted
)
SELECT 'marker', -1, NULL::bigint, (SELECT data FROM marker LIMIT 1), EXISTS (SELECT 1 FROM marker), NULL::text, false, false
UNION ALL
SELECT 'acquired', free.i, acquired.record_version_number, acquired.data, acquired.ours, NULL::text,
	acquired.inserted, free.held FROM acquired CROSS JOIN free
UNION ALL
SELECT 'held', i, record_version_number, NULL::bytea, false, owner::text, false, false FROM current
WHERE record_version_number IS NOT NULL AND NOT EXISTS (SELECT 1 FROM acquired)`
}

// heartbeatBatchSQL is statements.heartbeatBatch on the quoted table t.
// The table is scanned by name = ANY(ARRAY(...)): an array whose
// length the planner cannot see, so it looks the rows up through the
// primary key instead of hashing a scan of the whole table, and it
// expects few rows in locked, so the UPDATE probes the primary key
// once per locked row. A batch costs O(batch), not O(table). (A
// plain $1 array would be seen as 1000 names and planned as a
// sequential scan; a correlated EXISTS per name ran one scan per
// name.)
func heartbeatBatchSQL(t string) string {
	return `WITH req AS (
	SELECT r.name, r.rvn FROM unnest($1::text[], $2::bigint[]) AS r(name, rvn)
), cur AS (
	SELECT l.name, l.record_version_number FROM ` + t + ` l
	WHERE l.name = ANY(ARRAY(SELECT name FROM req)) AND l.owner = $4::text
), locked AS (
	SELECT l.name, l.record_version_number FROM ` + t + ` l
	JOIN req ON l.name = req.name AND l.record_version_number = req.rvn
	WHERE l.name = ANY(ARRAY(SELECT name FROM req)) AND l.owner = $4::text
	FOR UPDATE OF l SKIP LOCKED
), bumped AS (
	UPDATE ` + t + ` l SET record_version_number = nextval($3::regclass)
	FROM locked
	WHERE l.name = locked.name AND l.record_version_number = locked.record_version_number
	RETURNING l.name, locked.record_version_number AS old_rvn, l.record_version_number AS new_rvn
)
SELECT req.name, req.rvn, bumped.new_rvn, cur.name IS NOT NULL
FROM req
LEFT JOIN bumped ON bumped.name = req.name AND bumped.old_rvn = req.rvn
LEFT JOIN cur ON cur.name = req.name AND cur.record_version_number = req.rvn`
}

// resolveTableSQL is statements.resolveTable.
const resolveTableSQL = `SELECT c.oid::bigint, format('%I.%I', n.nspname, c.relname),
	$2::boolean AND COALESCE(
		array_position(current_schemas(true), current_schema()) < array_position(current_schemas(true), n.nspname),
		false)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass($1::text)`

// tableColumns is the lock table's definition after its name in CREATE
// TABLE.
func tableColumns() string {
	// The original library's columns. Pages are left half empty, so that
	// a heartbeat's new row version fits in its row's page: every
	// heartbeat is then a HOT update (it changes no indexed column), the
	// old versions are pruned in place, and the table does not grow under
	// a steady load. Only the storage differs from the original's table;
	// its clients and this one share either.
	return `(
	name CHARACTER VARYING(255) PRIMARY KEY,
	record_version_number BIGINT,
	data BYTEA,
	owner CHARACTER VARYING(255)
) WITH (fillfactor = ` + strconv.Itoa(LockTableFillfactor) + `)`
}
