package bounded_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"cirello.io/pglock/internal/bounded"
)

// TestCallLeftBehind: a call that ignores its context is left behind within
// the grace period; the caller gets an AbandonedError wrapping the
// context's error; the call is counted stuck until it returns, and late
// then receives its error.
func TestCallLeftBehind(t *testing.T) {
	var r bounded.Runner
	release := make(chan struct{})
	lateErr := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Run(ctx, func(context.Context) error {
		<-release
		return errors.New("returned at last")
	}, func(err error) { lateErr <- err })
	took := time.Since(start)
	var abandoned *bounded.AbandonedError
	require.ErrorAs(t, err, &abandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, time.Second, "the caller waited for the call")
	require.EqualValues(t, 1, r.Stuck())
	require.EqualValues(t, 1, r.Abandoned())

	waitCtx, waitCancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer waitCancel()
	require.ErrorIs(t, r.Wait(waitCtx), context.DeadlineExceeded, "Wait joined a call still blocked")

	close(release)
	require.EqualError(t, <-lateErr, "returned at last")
	require.NoError(t, r.Wait(context.Background()))
	require.EqualValues(t, 0, r.Stuck())
	require.EqualValues(t, 1, r.Abandoned())
}

// TestCallReturnsItsOwnError: a call that returns within the grace period
// after its context ended gives its own error, and is not left behind.
func TestCallReturnsItsOwnError(t *testing.T) {
	r := bounded.Runner{Grace: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := r.Run(ctx, func(ctx context.Context) error {
		time.Sleep(10 * time.Millisecond)
		return errors.New("canceling statement")
	}, nil)
	require.EqualError(t, err, "canceling statement")
	require.Zero(t, r.Abandoned())
}

// TestSpawnIsJoined: Wait waits for spawned functions.
func TestSpawnIsJoined(t *testing.T) {
	var r bounded.Runner
	done := make(chan struct{})
	r.Spawn(func() { time.Sleep(20 * time.Millisecond); close(done) })
	require.NoError(t, r.Wait(context.Background()))
	select {
	case <-done:
	default:
		t.Fatal("Wait returned before the spawned function")
	}
}
