package pglock

// EcoTypeError exposes typeError to the external tests that check errors of
// both drivers are classified alike, from real server and network faults
// provoked outside the client's own statements.
var EcoTypeError = typeError
