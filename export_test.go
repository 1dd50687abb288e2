package pglock

// SetMaxWatched sets how many names a Client remembers an RVN for, and
// returns a function that restores the default. Tests that shrink it must
// not run in parallel with others.
func SetMaxWatched(n int) (restore func()) {
	old := maxWatched
	maxWatched = n
	return func() { maxWatched = old }
}
