package prometheus_test

import (
	"bufio"
	"database/sql"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	_ "github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"cirello.io/pglock"
	pglockprom "cirello.io/pglock/prometheus"
)

// A client's metrics served on /metrics, labelled with the lock table. The
// example scrapes the handler once and prints the lock counts.
func ExampleNewCollector() {
	db, err := sql.Open("postgres", exampleDSN())
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	c, err := pglock.New(db, pglock.WithCustomTable("example_metrics"))
	if err != nil {
		log.Fatal(err)
	}
	if err := c.TryCreateTable(); err != nil {
		log.Fatal(err)
	}
	defer c.DropTable()

	reg := prometheus.NewRegistry()
	reg.MustRegister(pglockprom.NewCollector(c,
		pglockprom.WithConstLabels(prometheus.Labels{"table": "example_metrics"})))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	l, err := c.Acquire("report")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", http.NoBody))
	for sc := bufio.NewScanner(rec.Body); sc.Scan(); {
		if line := sc.Text(); strings.HasPrefix(line, "pglock_acquired_total") || strings.HasPrefix(line, "pglock_held") {
			fmt.Println(line)
		}
	}
	// Output:
	// pglock_acquired_total{table="example_metrics"} 1
	// pglock_held{table="example_metrics"} 1
}
