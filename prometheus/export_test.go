package prometheus

// ServerDSN is the test server's connection string, for the examples,
// which are in package prometheus_test.
func ServerDSN() string { return srv.DSN() }
