package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// durationFlag is a flag holding a duration of at least min; with
// positive, also above zero. Its errors say what is expected, with an
// example, and flag puts the flag's name and the value before them.
type durationFlag struct {
	d        *time.Duration
	min      time.Duration
	positive bool
}

// durationVar defines a duration flag on fs, as fs.DurationVar does, that
// refuses values below least (and zero, with positive).
func durationVar(fs *flag.FlagSet, d *time.Duration, name string, value, least time.Duration, positive bool, usage string) {
	*d = value
	fs.Var(durationFlag{d: d, min: least, positive: positive}, name, usage)
}

// String returns the duration, as flag.Value requires.
func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

// Set parses s as a Go duration.
func (f durationFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("not a duration: write a number with a unit, as in 5s, 100ms or 2m")
	case f.positive && d <= 0:
		return errors.New("must be positive, as in 5s")
	case d < 0 && f.min == 0:
		return errors.New("must not be negative, as in 30s (0: none)")
	case d < f.min:
		return fmt.Errorf("must be at least %v, as in 5s", f.min)
	}
	*f.d = d
	return nil
}

// tableFlag is --table: a table name, never empty.
type tableFlag struct{ table *string }

func (f tableFlag) String() string {
	if f.table == nil {
		return ""
	}
	return *f.table
}

func (f tableFlag) Set(s string) error {
	if s == "" {
		return errors.New(`empty: name a table, or leave --table out for "locks"`)
	}
	*f.table = s
	return nil
}

// flagError writes the flag package's errors with the double dash pglock's
// usage uses: "invalid value "5" for flag --lease: ...".
func flagError(err error) error {
	msg := err.Error()
	for _, from := range []string{"for flag -", "not defined: -", "needs an argument: -"} {
		msg = strings.Replace(msg, from, from+"-", 1)
	}
	return errors.New(msg)
}
