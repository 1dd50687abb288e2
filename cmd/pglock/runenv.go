package main

import (
	"os"
	"strconv"
	"strings"
)

// The environment variables pglock run adds to the command's environment.
const (
	// envFencingToken is the record version number the lock was acquired
	// with: every later holder of the lock gets a larger one, so a store
	// that keeps the largest token it saw refuses this command's writes
	// once its successor wrote.
	envFencingToken = "PGLOCK_FENCING_TOKEN"
	// envLockName is the lock's name.
	envLockName = "PGLOCK_LOCK_NAME"
)

// commandEnv is the environment of the command run under the lock name,
// acquired with the record version number token: pglock's own, plus the
// lock's name and token, which replace any inherited.
func commandEnv(name string, token int64) []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envFencingToken+"=") && !strings.HasPrefix(kv, envLockName+"=") {
			env = append(env, kv)
		}
	}
	return append(env,
		envFencingToken+"="+strconv.FormatInt(token, 10),
		envLockName+"="+name)
}
