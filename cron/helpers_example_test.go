package cron_test

import pglockcron "cirello.io/pglock/cron"

// exampleDSN stands for the application's connection string in the
// examples.
func exampleDSN() string { return pglockcron.ServerDSN() }
