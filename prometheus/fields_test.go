package prometheus

import (
	"reflect"
	"testing"
	"time"

	"cirello.io/pglock"
)

// TestEveryStatsFieldHasAMetric fails when pglock.Stats gains a field that
// the metrics table does not export, when the table names a field Stats
// does not have, and when a metric does not read the field it names: it
// sets each field on its own and checks that its metric, and no other
// metric of a field, reads it.
func TestEveryStatsFieldHasAMetric(t *testing.T) {
	typ := reflect.TypeFor[pglock.Stats]()
	byField := make(map[string]metric)
	for _, m := range metrics {
		if m.field == "" {
			continue
		}
		if _, ok := typ.FieldByName(m.field); !ok {
			t.Errorf("%s exports pglock.Stats.%s, which does not exist", m.name, m.field)
		}
		byField[m.field] = m
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		m, ok := byField[f.Name]
		if !ok {
			t.Errorf("pglock.Stats.%s has no metric: add it to metrics", f.Name)
			continue
		}
		var s pglock.Stats
		want := setField(t, reflect.ValueOf(&s).Elem().Field(i))
		for _, other := range metrics {
			got := other.value(s)
			switch {
			case other.name == m.name && got != want:
				t.Errorf("%s reads %v with Stats.%s set to give %v", m.name, got, f.Name, want)
			case other.name != m.name && other.field != "" && got != 0:
				t.Errorf("%s reads %v with only Stats.%s set", other.name, got, f.Name)
			}
		}
	}
}

// setField sets v, a Stats field, to a value that is not zero, and returns
// what its metric must read.
func setField(t *testing.T, v reflect.Value) float64 {
	t.Helper()
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		v.SetInt(int64(1500 * time.Millisecond))
		return 1.5
	case v.Kind() == reflect.Int64:
		v.SetInt(7)
		return 7
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
		return 1
	}
	t.Fatalf("a Stats field of type %v: teach setField and the metrics table about it", v.Type())
	return 0
}

// TestMetricNamesAreUnique guards the table against a copied row.
func TestMetricNamesAreUnique(t *testing.T) {
	seen := make(map[string]bool)
	for _, m := range metrics {
		if seen[m.name] {
			t.Errorf("%s is in the metrics table twice", m.name)
		}
		seen[m.name] = true
	}
}
