// Package prometheus exports a pglock.Client's Stats as Prometheus
// metrics. It is a module of its own, cirello.io/pglock/prometheus, so that
// programs that use pglock without Prometheus never download the
// Prometheus client.
//
// NewCollector returns a prometheus.Collector that reads Client.Stats once
// per scrape and exports every field of pglock.Stats, plus Stats.Held:
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(pglockprom.NewCollector(c,
//		pglockprom.WithConstLabels(prometheus.Labels{"table": "locks"})))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The package's name is prometheus, as its path says; import it under
// another name (pglockprom above) next to the Prometheus client's own
// prometheus package.
//
// Totals are counters whose names end in _total, durations are in seconds
// (a total wait time is pglock_wait_seconds_total, the longest wait the
// gauge pglock_wait_max_seconds), and every name starts with pglock_. The
// metrics are listed in docs/prometheus.md in the repository.
//
// A snapshot's fields are read one by one (see pglock.Stats), so one scrape
// may be a few events apart between metrics; each metric on its own is
// exact and the counters never go down.
package prometheus
