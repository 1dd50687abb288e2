package pglock_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quickstartPath is the program the README's Quickstart quotes.
const quickstartPath = "examples/quickstart/main.go"

// readmeQuickstart returns the first Go block of the README's Quickstart.
func readmeQuickstart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n## Quickstart\n")
	require.True(t, ok, "README.md has no Quickstart section")
	_, block, ok := strings.Cut(section, "\n```go\n")
	require.True(t, ok, "the Quickstart has no Go block")
	block, _, ok = strings.Cut(block, "\n```\n")
	require.True(t, ok, "the Quickstart's Go block does not end")
	return block + "\n"
}

// TestReadmeQuickstartIsTheExample checks that the README's Quickstart is
// examples/quickstart/main.go, which go vet and go build check like any
// other package.
func TestReadmeQuickstartIsTheExample(t *testing.T) {
	t.Parallel()
	prog, err := os.ReadFile(quickstartPath)
	require.NoError(t, err)
	assert.Equal(t, string(prog), readmeQuickstart(t), "README.md's Quickstart differs from %s", quickstartPath)
}

// TestQuickstartRuns runs the Quickstart, unchanged, against a database of
// its own where the lock table does not exist yet, twice: the second run
// finds the table the first created.
func TestQuickstartRuns(t *testing.T) {
	t.Parallel()
	if srv.External() {
		t.Skip("the Quickstart makes its table in a database of its own; an external server is not given one")
	}
	dsn, err := srv.CreateDatabase("quickstart_" + randomHex(4))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(bg, 2*time.Minute)
	defer cancel()
	bin := t.TempDir() + "/quickstart"
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/quickstart")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for range 2 {
		run := exec.CommandContext(ctx, bin)
		run.Env = append(os.Environ(), "DATABASE_URL="+dsn)
		out, err := run.CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "holding customer-42\n", string(out))
	}
}

// TestCIRunsTheReadmeTestCommand checks that .ci/run runs the test command
// of the README's Development section as it is written there.
func TestCIRunsTheReadmeTestCommand(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	ci, err := os.ReadFile(".ci/run")
	require.NoError(t, err)
	_, dev, ok := strings.Cut(string(readme), "\n## Development\n")
	require.True(t, ok, "README.md has no Development section")
	var command string
	for _, line := range strings.Split(dev, "\n") {
		if strings.HasPrefix(line, "go test ") {
			command, _, _ = strings.Cut(line, "#")
			command = strings.TrimSpace(command)
			break
		}
	}
	require.NotEmpty(t, command, "the Development section gives no go test command")
	assert.Contains(t, strings.Split(string(ci), "\n"), command, ".ci/run does not run %q", command)
}
