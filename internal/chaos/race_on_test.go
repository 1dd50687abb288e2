//go:build race

package chaos_test

// raceEnabled tells the chaos test to build its workers with -race too.
const raceEnabled = true
