package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCLIConnectTimeoutThenExitTimeout connects to a server that accepts
// the connection and never answers: pglock gives up after the connect
// timeout, then leaves within --exit-timeout, warning about the connection
// attempt it leaves behind, as docs/cli.md says. It changes connectTimeout,
// so it does not run in parallel (the other tests run the binary).
func TestCLIConnectTimeoutThenExitTimeout(t *testing.T) {
	fullSuiteOnly(t)
	p, dsn := proxied(t)
	_, err := p.Partition()
	require.NoError(t, err)
	defer func(d time.Duration) { connectTimeout = d }(connectTimeout)
	connectTimeout = 2 * time.Second

	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := realMain([]string{"--dsn", dsn, "--exit-timeout", testExitTimeout.String(), "ls"}, &stdout, &stderr)
	took := time.Since(start)
	t.Logf("exited %d after %v; stderr:\n%s", code, took, stderr.String())
	assert.Equal(t, exitError, code)
	assert.Contains(t, stderr.String(), "cannot connect")
	assert.Contains(t, stderr.String(), "warning: exiting anyway")
	assert.GreaterOrEqual(t, took, connectTimeout)
	assert.Less(t, took, connectTimeout+testExitTimeout+exitSlack)
}
