package pglock_test

import (
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock"
)

// TestFailoverAsync fails over to an asynchronous standby under a load of
// acquisitions, heartbeats and Guard-fenced writes, and compares what the
// clients believe with what the new primary has. Commits the standby had
// not received are lost; whatever was lost, a holder whose row went back in
// time learns it from its next heartbeat on the new primary, locks whose
// rows are intact survive, and fenced writes of two holders of one name
// never interleave. "kill" kills the primary as it runs, so the loss is
// what the replication lag left; "partition" detaches the standby a moment
// before, so that the last 300ms of commits are lost for certain.
func TestFailoverAsync(t *testing.T) {
	fullSuiteOnly(t)
	t.Run("kill", func(t *testing.T) { testFailoverAsync(t, 0) })
	t.Run("partition", func(t *testing.T) { testFailoverAsync(t, 300*time.Millisecond) })
}

func testFailoverAsync(t *testing.T, partition time.Duration) {
	t.Helper()
	pair := newFailoverPair(t, false)
	db := openFailoverDB(t, "postgres", pair)
	opts := []pglock.ClientOption{pglock.WithLeaseDuration(6 * time.Second), pglock.WithHeartbeatFrequency(100 * time.Millisecond)}
	first, table := newClientTable(t, db, opts...)
	clients := []*pglock.Client{first, sameTable(t, db, table, opts...), sameTable(t, db, table, opts...)}
	closeClients(t, clients...)
	fence := newFenceTable(t, db)
	require.NoError(t, pair.primary.CaughtUp(pair.standby))

	fz := startFencers(t, db, clients, 2, lockNames("fenced", 3), fence)
	churn := make([]*acquirer, len(clients))
	for i, c := range clients {
		churn[i] = startAcquirer(t, c, fmt.Sprintf("churn-%d", i), 5*time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	if partition > 0 {
		require.NoError(t, pair.standby.Detach())
		time.Sleep(partition)
	}
	require.NoError(t, pair.primary.Kill())
	killed := time.Now()
	var held []believed
	for _, a := range churn {
		held = append(held, believedAt(a.acquiredBefore(killed))...)
	}
	require.NotEmpty(t, held)
	time.Sleep(time.Second)
	require.NoError(t, pair.standby.Promote())
	promoted := time.Now()
	ends, firstBeat := watchEnds(held, clients, promoted, 1500*time.Millisecond)

	committed := fz.stop()
	names := map[string]bool{}
	for _, a := range churn {
		for _, g := range a.stop() {
			names[g.l.Name()] = true
		}
	}
	loss := classify(t, db, table, held, ends, killed)
	orphans := orphanRows(t, db, table, names)
	found := checkFencing(t, db, fence)
	var fencedLost, fencedUnseen, fencedRows int
	for w, n := range committed {
		fencedRows += n
		fencedLost += max(0, n-found[w])
	}
	for w, n := range found {
		fencedUnseen += max(0, n-committed[w])
	}
	t.Logf("async failover (partition %v, outage %v): %d locks held at the kill (acquired in the %v before it): %d acquisitions lost "+
		"(the oldest returned %v before the kill), %d rows back in time, %d intact; lost locks ended %v after the promotion at most "+
		"(first heartbeat on the new primary %v after it); %d fenced rows committed as the clients saw, %d of them lost, %d committed unseen; %d tenures checked; "+
		"%d rows of acquisitions the clients saw fail",
		partition, promoted.Sub(killed).Round(time.Millisecond), len(held), loss.span.Round(time.Millisecond),
		loss.acquisitions, loss.oldest.Round(time.Millisecond), loss.backInTime, loss.intact, loss.latestEnd.Round(time.Millisecond),
		firstBeat.Round(time.Millisecond), fencedRows, fencedLost, fencedUnseen, len(found), orphans)
	if partition > 0 {
		require.NotZero(t, loss.acquisitions+loss.backInTime, "nothing lost though the standby was detached")
	}
}

// believed is a lock a client held at the kill, with the RVN it knew.
type believed struct {
	l   *pglock.Lock
	rvn int64
	at  time.Time // when its Acquire returned
}

// believedAt returns the locks of got still held, with their RVNs now: no
// statement can change them while no server accepts writes.
func believedAt(got []acquired) []believed {
	var held []believed
	for _, g := range got {
		if !g.l.IsReleased() {
			held = append(held, believed{l: g.l, rvn: g.l.RecordVersionNumber(), at: g.at})
		}
	}
	return held
}

// watchEnds polls, for d after promoted, when each lock of held ends, and
// when a heartbeat of one of clients first succeeded on the new primary;
// both are durations since promoted, -1 for a heartbeat never seen.
func watchEnds(held []believed, clients []*pglock.Client, promoted time.Time, d time.Duration) (map[*pglock.Lock]time.Duration, time.Duration) {
	ends := map[*pglock.Lock]time.Duration{}
	beats := make([]int64, len(clients))
	for i, c := range clients {
		beats[i] = c.Stats().Heartbeats
	}
	firstBeat := time.Duration(-1)
	for time.Since(promoted) < d {
		for _, b := range held {
			if _, ok := ends[b.l]; !ok && isClosed(b.l.Done()) {
				ends[b.l] = time.Since(promoted)
			}
		}
		for i, c := range clients {
			if firstBeat < 0 && c.Stats().Heartbeats > beats[i] {
				firstBeat = time.Since(promoted)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ends, firstBeat
}

// lossCounts is what classify found.
type lossCounts struct {
	acquisitions int           // rows missing on the new primary
	backInTime   int           // rows at an RVN older than the holder's
	intact       int           // rows at the holder's RVN or newer
	span         time.Duration // from the oldest acquisition held to the kill
	oldest       time.Duration // from the oldest acquisition lost to the kill
	latestEnd    time.Duration // the latest loss after the promotion
}

// classify compares each lock held at the kill with its row on the new
// primary. A lock whose row is missing or went back in time must have
// ended, found moved by a statement (not by its lease running out), within
// the watch; a lock whose row is intact must still be held.
func classify(t *testing.T, db *sql.DB, table string, held []believed, ends map[*pglock.Lock]time.Duration, killed time.Time) lossCounts {
	t.Helper()
	var n lossCounts
	for _, b := range held {
		n.span = max(n.span, killed.Sub(b.at))
		owner, rvn, ok := rowOf(t, db, table, b.l.Name())
		switch {
		case ok && owner != b.l.Owner():
			t.Fatalf("%s: row of %s on the new primary, held by %s", b.l.Name(), owner, b.l.Owner())
		case ok && rvn >= b.rvn:
			n.intact++
			require.False(t, isClosed(b.l.Done()), "%s: row intact, lock lost: %v", b.l.Name(), b.l.Err())
			continue
		case ok:
			n.backInTime++
		default:
			n.acquisitions++
			n.oldest = max(n.oldest, killed.Sub(b.at))
		}
		end, ended := ends[b.l]
		require.True(t, ended, "%s: row went back in time (%d, held %d), lock still held", b.l.Name(), rvn, b.rvn)
		require.ErrorContains(t, b.l.Err(), "no longer carries", b.l.Name())
		n.latestEnd = max(n.latestEnd, end)
	}
	return n
}

// orphanRows counts rows of the churn acquisitions on the new primary
// whose acquisition no client saw succeed: it committed, but the answer
// was lost with the connection. They expire after a lease.
func orphanRows(t *testing.T, db *sql.DB, table string, acquired map[string]bool) int {
	t.Helper()
	rows, err := db.QueryContext(testCtx(t), `SELECT name FROM `+quote(table)+` WHERE name LIKE 'churn-%'`)
	require.NoError(t, err)
	defer rows.Close()
	var n int
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		if !acquired[name] {
			n++
		}
	}
	require.NoError(t, rows.Err())
	return n
}
