package prometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	"cirello.io/pglock"
)

// Option configures NewCollector.
type Option func(*options)

type options struct {
	constLabels prometheus.Labels
}

// WithConstLabels adds labels with fixed values to every metric, for
// example the lock table's name or the client's role. Two collectors
// registered in one registry must differ in at least one of them, or the
// registry refuses the second.
func WithConstLabels(labels prometheus.Labels) Option {
	return func(o *options) {
		o.constLabels = make(prometheus.Labels, len(labels))
		for k, v := range labels {
			o.constLabels[k] = v
		}
	}
}

// collector reads a client's Stats on each scrape.
type collector struct {
	c     *pglock.Client
	descs []*prometheus.Desc // descs[i] describes metrics[i]
}

// NewCollector returns a collector of c's Stats: one snapshot per scrape,
// exported as the metrics the package documentation describes. c must not
// be nil. The collector is safe for concurrent scrapes, and scraping a
// closed client still reports its final counts.
func NewCollector(c *pglock.Client, opts ...Option) prometheus.Collector {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	col := &collector{c: c, descs: make([]*prometheus.Desc, len(metrics))}
	for i, m := range metrics {
		col.descs[i] = prometheus.NewDesc(m.name, m.help, nil, o.constLabels)
	}
	return col
}

// Describe implements prometheus.Collector.
func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range col.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (col *collector) Collect(ch chan<- prometheus.Metric) {
	s := col.c.Stats()
	for i, m := range metrics {
		ch <- prometheus.MustNewConstMetric(col.descs[i], m.kind, m.value(s))
	}
}
