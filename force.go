package pglock

import (
	"context"
	"fmt"
)

// ForceRelease deletes the named lock's row whatever its record version
// number, held or kept, data included, and wakes the clients waiting for it.
// It is an operator's override for a lock whose holder is stuck: it breaks
// mutual exclusion for the current holder, which goes on believing it holds
// the lock until its next heartbeat finds the row gone (up to one heartbeat
// period), while a waiter may already have taken it. Use it only when the
// holder is known to be dead or harmless. It returns ErrLockNotFound when
// there is no such row. When the connection broke (an UnavailableError) the
// row may or may not have been deleted; any other error leaves it as it was.
func (c *Client) ForceRelease(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return &OtherError{err}
	}
	if err := c.checkTable(ctx, false); err != nil {
		return err
	}
	affected, err := c.execAffected(ctx, c.sql.extra.forceRelease, name, c.table.channel())
	switch {
	case err != nil:
		return typeError(fmt.Errorf("pglock: cannot force the release of %q: %w", name, err))
	case affected == 0:
		return ErrLockNotFound
	}
	c.log.Debug("lock released by force", "lock", name, "by", c.owner)
	return nil
}
