package ident

import (
	"errors"
	"strings"
	"testing"
)

func TestIdentParse(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxBytes)
	for _, tc := range []struct {
		in, schema, name, quoted string
	}{
		{"locks", "", "locks", `"locks"`},
		{"MySchema.Locks", "myschema", "locks", `"myschema"."locks"`},
		{`"My Locks"`, "", "My Locks", `"My Locks"`},
		{`s."Odd ""Locks"""`, "s", `Odd "Locks"`, `"s"."Odd ""Locks"""`},
		{`"A"."B"`, "A", "B", `"A"."B"`},
		{`schema."quoted.dots"`, "schema", "quoted.dots", `"schema"."quoted.dots"`},
		{"_private$1", "", "_private$1", `"_private$1"`},
		{`""""`, "", `"`, `""""`},
		{long, "", long, `"` + long + `"`},
		{long + "." + long, long, long, `"` + long + `"."` + long + `"`},
		// Text of no recognised shape is one identifier, taken whole.
		{"a.b.c", "", "a.b.c", `"a.b.c"`},
		{"locks; DROP TABLE x", "", "locks; DROP TABLE x", `"locks; DROP TABLE x"`},
		{`x"; DROP TABLE y; --"`, "", `x"; DROP TABLE y; --"`, `"x""; DROP TABLE y; --"""`},
		{`"unterminated`, "", `"unterminated`, `"""unterminated"`},
		{`""`, "", `""`, `""""""`},
		{`"a"b`, "", `"a"b`, `"""a""b"`},
		{"s.", "", "s.", `"s."`},
		{".s", "", ".s", `".s"`},
		{"1abc", "", "1abc", `"1abc"`},
		{"my-locks", "", "my-locks", `"my-locks"`},
		{"Été", "", "Été", `"Été"`},
		{`public."Locks".`, "", `public."Locks".`, `"public.""Locks""."`},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.Schema != tc.schema || got.Name != tc.name {
			t.Errorf("Parse(%q) = %+v, want schema %q name %q", tc.in, got, tc.schema, tc.name)
		}
		if q := got.Quoted(); q != tc.quoted {
			t.Errorf("Parse(%q).Quoted() = %s, want %s", tc.in, q, tc.quoted)
		}
		if s := Split(tc.in); s != got {
			t.Errorf("Split(%q) = %+v, Parse gave %+v", tc.in, s, got)
		}
	}
}

func TestIdentParseRefuses(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", MaxBytes+1)
	const tooLong = "each part must be 1 to 63 bytes"
	for _, tc := range []struct {
		in, reason string
	}{
		{"", ""},
		{"a\x00b", ""},
		{`"a` + "\x00" + `"`, ""},
		{"\xff", ""},
		{"s.\xfe", ""},
		{long, tooLong},
		{long + ".t", tooLong},
		{"s." + long, tooLong},
		{`"` + long + `"`, tooLong},
		{strings.Repeat("é", 32), tooLong}, // 64 bytes, 32 characters
	} {
		got, err := Parse(tc.in)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q) = %+v, %v; want an *Error", tc.in, got, err)
			continue
		}
		if e.Input != tc.in || e.Reason != tc.reason {
			t.Errorf("Parse(%q): input %q reason %q, want reason %q", tc.in, e.Input, e.Reason, tc.reason)
		}
		if got != (Table{}) {
			t.Errorf("Parse(%q) refused but returned %+v", tc.in, got)
		}
	}
}

func TestIdentErrorMessage(t *testing.T) {
	t.Parallel()
	_, err := Parse("")
	if want := `invalid table name ""`; err == nil || err.Error() != want {
		t.Errorf("Parse(\"\"): %v, want %s", err, want)
	}
	_, err = Parse(strings.Repeat("x", 64))
	if want := "(each part must be 1 to 63 bytes)"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("Parse of 64 bytes: %v, want it to end in %s", err, want)
	}
}

func TestIdentQuote(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":        `""`,
		"a":       `"a"`,
		`a"b`:     `"a""b"`,
		`""`:      `""""""`,
		"a\x00b":  `"a"`,
		"\x00":    `""`,
		"a b.c;d": `"a b.c;d"`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzIdentParse: Parse never panics, and a name it accepts reads back
// from its quoted form as the same parts, so that quoting loses nothing.
func FuzzIdentParse(f *testing.F) {
	for _, s := range []string{"locks", `s."T"`, `"a""b".c`, "a.b.c", `"`, `""`, ".", "a\x00", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Input != s {
				t.Fatalf("Parse(%q): %v is not an *Error about the input", s, err)
			}
			return
		}
		back, err := Parse(got.Quoted())
		if err != nil || back != got {
			t.Fatalf("Parse(%q) = %+v, but its quoted form %s reads as %+v, %v", s, got, got.Quoted(), back, err)
		}
	})
}
