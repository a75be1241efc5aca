package cookie

import (
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	sredis "github.com/bffgate/bffgate/session/redis"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// The Redis EndedStore answers the cookie store's two ended-session
// checks in one call (EndedAnyStore); the contract holds on it as on the
// data file's.
func TestStoreContractRedisEnded(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		c := redistest.Client(t)
		ended := sredis.NewEnded(c, redistest.Prefix(t, c, "session:"))
		if _, ok := any(ended).(EndedAnyStore); !ok {
			t.Fatal("the Redis EndedStore does not implement EndedAnyStore")
		}
		return newStore(t, Config{Now: now, Ended: ended})
	})
}
