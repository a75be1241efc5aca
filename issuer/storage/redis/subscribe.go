package redis

import (
	"context"
	"fmt"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Subscribe listens on the Store's pub/sub channel for denylist additions
// (every denylist write publishes its entry inside the same EXEC) and
// calls fn for each, from one goroutine, until ctx is done. It returns once
// the subscription is confirmed, or the error that prevented it. It
// satisfies denylist.Subscriber.
//
// Pub/sub delivers at most once: a message sent while the connection is
// down is lost (go-redis reconnects and resubscribes by itself). The
// change-log poll (DenylistChanges) is the floor that catches those.
// Malformed messages are logged and skipped.
func (s *Store) Subscribe(ctx context.Context, fn func(storage.DenyEntry)) error {
	if fn == nil {
		return fmt.Errorf("redis: subscribe: fn is nil")
	}
	ps := s.rdb.Subscribe(ctx, s.k.channel())
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return fault("subscribe to "+s.k.channel(), err)
	}
	ch := ps.Channel()
	go func() {
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case msg, ok := <-ch:
				if !ok {
					return
				}
				e, err := decodeEntry(msg.Payload)
				if err != nil {
					s.log.Warn("ignoring malformed denylist message", "channel", msg.Channel, "err", err)
					continue
				}
				fn(e)
			}
		}
	}()
	return nil
}
