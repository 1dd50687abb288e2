package prometheus_test

import pglockprom "cirello.io/pglock/prometheus"

// exampleDSN stands for the application's connection string in the
// examples.
func exampleDSN() string { return pglockprom.ServerDSN() }
