package redis

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer/storage"
)

// countHook counts round trips to Redis: each command sent alone and each
// pipeline (a MULTI/EXEC included) is one.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkRoundTrips reports the Redis round trips of the store's
// operations (roundtrips/op: a figure the machine's load does not move),
// beside their time on loopback.
func BenchmarkRoundTrips(b *testing.B) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	setup := func(b *testing.B) (*Store, *countHook) {
		c := redistest.Client(b)
		h := &countHook{}
		c.AddHook(h)
		s, err := New(c, Config{Prefix: redistest.Prefix(b, c, "")})
		if err != nil {
			b.Fatal(err)
		}
		return s, h
	}
	redeem := func(b *testing.B, s *Store, i int) {
		g := "g" + strconv.Itoa(i)
		if err := s.CreateCode(ctx, storage.AuthCode{Hash: "c" + g, ClientID: "c", SID: "sid", ExpiresAt: exp}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.RedeemCode(ctx, "c"+g, now, func(storage.AuthCode) (storage.Issued, error) {
			return storage.Issued{
				Grant:   &storage.Grant{ID: g, SID: "sid", ExpiresAt: exp},
				Refresh: &storage.RefreshToken{JTI: g + "-r0", GrantID: g, ExpiresAt: exp},
			}, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	report := func(b *testing.B, h *countHook, before int64) {
		b.ReportMetric(float64(h.n.Load()-before)/float64(b.N), "roundtrips/op")
	}
	b.Run("RotateRefresh", func(b *testing.B) {
		s, h := setup(b)
		redeem(b, s, 0)
		jti := "g0-r0"
		start := h.n.Load()
		for i := 0; b.Loop(); i++ {
			next := "g0-r" + strconv.Itoa(i+1)
			if err := s.RotateRefresh(ctx, jti, true, now, func(old storage.RefreshToken) (storage.Issued, error) {
				r := old
				r.JTI = next
				return storage.Issued{Grant: &storage.Grant{ID: "g0", SID: "sid", ExpiresAt: exp}, Refresh: &r}, nil
			}); err != nil {
				b.Fatal(err)
			}
			jti = next
		}
		report(b, h, start)
	})
	b.Run("CreateAndRedeemCode", func(b *testing.B) {
		s, h := setup(b)
		start := h.n.Load()
		for i := 0; b.Loop(); i++ {
			redeem(b, s, i)
		}
		report(b, h, start)
	})
	b.Run("RevokeGrant", func(b *testing.B) {
		s, h := setup(b)
		for i := range b.N {
			redeem(b, s, i)
		}
		start := h.n.Load()
		b.ResetTimer()
		for i := range b.N {
			if err := s.RevokeGrant(ctx, "g"+strconv.Itoa(i), exp, now); err != nil {
				b.Fatal(err)
			}
		}
		report(b, h, start)
	})
	b.Run("Denied", func(b *testing.B) {
		s, h := setup(b)
		start := h.n.Load()
		for b.Loop() {
			if _, err := s.Denied(ctx, storage.DenyJTI, "live"); err != nil {
				b.Fatal(err)
			}
		}
		report(b, h, start)
	})
}
