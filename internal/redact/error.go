package redact

// Error is an error whose message was scrubbed of secrets. It unwraps to
// the original error, so that errors.Is and errors.As still find the
// driver's error; that error's own Error method is not scrubbed.
type Error struct {
	msg string
	err error
}

// Error returns the scrubbed message.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the original error.
func (e *Error) Unwrap() error { return e.err }

// Error returns err with its message scrubbed (see String), or err itself
// when its message holds no secret. nil stays nil.
func (s *Secrets) Error(err error) error {
	if err == nil || s.Empty() {
		return err
	}
	msg := err.Error()
	if clean := s.String(msg); clean != msg {
		return &Error{msg: clean, err: err}
	}
	return err
}
