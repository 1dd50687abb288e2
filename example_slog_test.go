package pglock_test

import (
	"log"
	"log/slog"
	"os"

	"cirello.io/pglock"
)

// A *slog.Logger receives structured records: the lock name, owner, record
// version number and durations as attributes, never the lock's data. Here
// the time and record version number are dropped to keep the output stable.
func ExampleWithSlog() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug, // the client logs routine events at Debug
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "rvn" {
				return slog.Attr{}
			}
			return a
		},
	}))
	c, _, cleanup := exampleClient(
		pglock.WithOwner("worker-1"),
		pglock.WithHeartbeatFrequency(0),
		pglock.WithSlog(logger),
	)
	defer cleanup()

	l, err := c.Acquire("invoice-42", pglock.WithData([]byte("never logged")))
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// level=DEBUG msg="lock acquired" lock=invoice-42 owner=worker-1
	// level=DEBUG msg="lock released" lock=invoice-42 owner=worker-1
}
