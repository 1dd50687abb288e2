package needtool

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

var errMissing = errors.New("no frobnicator binary found")

// TestMissingSkipsAndReports checks that outside CI a test that lacks a
// tool is skipped, and named in the summary with the install command.
func TestMissingSkipsAndReports(t *testing.T) {
	t.Setenv("CI", "")
	t.Run("needs-frob", func(t *testing.T) {
		Missing(t, "apt-get install frob", errMissing)
		t.Error("Missing did not stop the test")
	})
	s := Summary("example.com/pkg")
	for _, want := range []string{"example.com/pkg", "SKIPPED 1 tests", "apt-get install frob", "TestMissingSkipsAndReports/needs-frob"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary %q lacks %q", s, want)
		}
	}
}

// TestMissingFailsUnderCI runs the test binary again with CI=true on
// TestHelperNeedsFrob, which must then fail, not skip.
func TestMissingFailsUnderCI(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNeedsFrob$", "-test.v")
	cmd.Env = append(os.Environ(), "CI=true", "NEEDTOOL_HELPER=1")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("the helper did not fail under CI=true: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- FAIL: TestHelperNeedsFrob") || !strings.Contains(string(out), "apt-get install frob") {
		t.Errorf("unexpected output:\n%s", out)
	}
}

// TestHelperNeedsFrob is run by TestMissingFailsUnderCI only.
func TestHelperNeedsFrob(t *testing.T) {
	if os.Getenv("NEEDTOOL_HELPER") != "1" {
		t.Skip("run by TestMissingFailsUnderCI")
	}
	Missing(t, "apt-get install frob", errMissing)
}
