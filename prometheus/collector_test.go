package prometheus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cirello.io/pglock"
)

// TestCollectorScrape scrapes, through a registry, a client that acquired
// two locks and released one: every metric is there, with the constant
// labels, and the counts are the client's.
func TestCollectorScrape(t *testing.T) {
	c := newClient(t, uniqueTable(), pglock.WithHeartbeatFrequency(0))
	held, err := c.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	l, err := c.Acquire("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The pedantic registry also checks that what Collect sends matches
	// what Describe announced.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(c, WithConstLabels(prometheus.Labels{"table": "orders"})))
	want := map[string]float64{"pglock_acquired_total": 2, "pglock_released_total": 1, "pglock_held": 1}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exposition(want, "orders"))); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(NewCollector(c)); n != len(metrics) {
		t.Errorf("collected %d metrics, want %d", n, len(metrics))
	}
}

// TestCollectorWait scrapes a client whose acquisition waited for another
// client's release: the wait is counted and timed.
func TestCollectorWait(t *testing.T) {
	table := uniqueTable()
	c, other := newClient(t, table), newClient(t, table)
	l, err := other.Acquire("w")
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() { // joined below, through released
		time.Sleep(200 * time.Millisecond)
		released <- l.Close()
	}()
	got, err := c.Acquire("w")
	if rerr := <-released; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(c))
	values := gather(t, reg)
	if values["pglock_waits_total"] != 1 || values["pglock_acquired_total"] != 1 {
		t.Errorf("waits %v, acquired %v; want 1 and 1", values["pglock_waits_total"], values["pglock_acquired_total"])
	}
	if w, m := values["pglock_wait_seconds_total"], values["pglock_wait_max_seconds"]; w < 0.1 || m != w {
		t.Errorf("wait %vs, longest %vs: want the same, above 0.1s", w, m)
	}
}

// TestCollectorLint checks the metrics against Prometheus's naming rules.
func TestCollectorLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(NewCollector(newClient(t, uniqueTable())))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// exposition is the text format of every metric, with value 0 unless
// values says otherwise, labelled table.
func exposition(values map[string]float64, table string) string {
	var b strings.Builder
	for _, m := range metrics {
		typ := "counter"
		if m.kind == gauge {
			typ = "gauge"
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s{table=%q} %g\n", m.name, m.help, m.name, typ, m.name, table, values[m.name])
	}
	return b.String()
}

// gather scrapes reg and returns each metric's value by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				values[f.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				values[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return values
}
