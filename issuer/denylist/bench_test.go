package denylist

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
)

// The benchmarks give the figures the README quotes: the cost of the
// denylist check per token (a revoked token answered from the cache, a live
// token that reads the store), the memory of 100,000 entries in the cache
// and in the bbolt file, and the time to purge 100,000 expired entries.

const benchEntries = 100_000

// jtiLike returns n random ids shaped like the issuer's jtis (16 random
// bytes, base64url: 22 characters).
func jtiLike(n int) []string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	buf := make([]byte, 22*n)
	rand.Read(buf)
	ids := make([]string, n)
	for i := range ids {
		b := buf[i*22 : (i+1)*22]
		for j := range b {
			b[j] = alphabet[b[j]&63]
		}
		ids[i] = string(b)
	}
	return ids
}

// fixture is a bbolt file holding benchEntries denylisted jtis, built once
// per process (loading through the Store, with fsync off for the load
// only) and copied where a benchmark needs a fresh one.
var fixture struct {
	once sync.Once
	dir  string
	path string
	ids  []string
	base time.Time
	err  error
}

func loadFixture(b *testing.B) (path string, ids []string, base time.Time) {
	b.Helper()
	fixture.once.Do(func() {
		fixture.dir, fixture.err = os.MkdirTemp("", "bffgate-denylist-bench-")
		if fixture.err != nil {
			return
		}
		fixture.path = filepath.Join(fixture.dir, "fixture.db")
		fixture.ids = jtiLike(benchEntries)
		fixture.base = time.Now()
		db, err := datafile.Open(fixture.path, time.Second)
		if err != nil {
			fixture.err = err
			return
		}
		defer db.Close()
		db.NoSync = true
		s, err := bolt.New(db, bolt.Config{})
		if err != nil {
			fixture.err = err
			return
		}
		ctx := context.Background()
		until := fixture.base.Add(time.Hour)
		for _, id := range fixture.ids {
			if err := s.RevokeAccessToken(ctx, id, "", until, fixture.base); err != nil {
				fixture.err = err
				return
			}
		}
		fixture.err = db.Sync()
	})
	if fixture.err != nil {
		b.Fatalf("build fixture: %v", fixture.err)
	}
	return fixture.path, fixture.ids, fixture.base
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// copyFixture copies the fixture file to a fresh path and opens a Store on
// it.
func copyFixture(b *testing.B, src string) (*bolt.Store, *bbolt.DB) {
	b.Helper()
	dst := filepath.Join(b.TempDir(), "bffgate.db")
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	db, err := datafile.Open(dst, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	s, err := bolt.New(db, bolt.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return s, db
}

// BenchmarkDeniedHit: a revoked token presented again, answered from the
// cache.
func BenchmarkDeniedHit(b *testing.B) {
	s, _ := newStore(b)
	l, err := New(Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	id := jtiLike(1)[0]
	l.Add(denyJTI(id, time.Now().Add(time.Hour)))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := l.Denied(ctx, id, "grant"); err != nil || !d {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkDeniedMiss: a live token (jti and grant both checked) against
// a bbolt file holding 100,000 denylist entries: the per-token cost of the
// denylist for every valid token.
func BenchmarkDeniedMiss(b *testing.B) {
	path, _, _ := loadFixture(b)
	s, db := copyFixture(b, path)
	defer db.Close()
	l, err := New(Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	jti, grant := jtiLike(1)[0], jtiLike(1)[0]
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := l.Denied(ctx, jti, grant); err != nil || d {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkDeniedMissParallel: the same check from every core at once
// (bbolt readers do not block each other).
func BenchmarkDeniedMissParallel(b *testing.B) {
	path, _, _ := loadFixture(b)
	s, db := copyFixture(b, path)
	defer db.Close()
	l, err := New(Config{Store: s})
	if err != nil {
		b.Fatal(err)
	}
	jti, grant := jtiLike(1)[0], jtiLike(1)[0]
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, err := l.Denied(ctx, jti, grant); err != nil || d {
				b.Error(d, err)
				return
			}
		}
	})
}

// BenchmarkCacheMemory100k reports the heap held by a cache of 100,000
// denied jtis (cache-B/entry and cache-MB).
func BenchmarkCacheMemory100k(b *testing.B) {
	ids := jtiLike(benchEntries)
	until := time.Now().Add(time.Hour)
	var perEntry, total float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := newLRU(benchEntries)
		for _, id := range ids {
			c.put(cacheKey("jti", id), until)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		total = float64(after.HeapAlloc) - float64(before.HeapAlloc)
		perEntry = total / benchEntries
		runtime.KeepAlive(c)
	}
	b.ReportMetric(perEntry, "cache-B/entry")
	b.ReportMetric(total/1e6, "cache-MB")
}

// BenchmarkStoreSize100k reports the bbolt file size for 100,000 denylist
// entries (each with its change-log and expiry-index entries).
func BenchmarkStoreSize100k(b *testing.B) {
	path, _, _ := loadFixture(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
	}
	b.ReportMetric(float64(fi.Size())/benchEntries, "file-B/entry")
	b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
}

// BenchmarkPurge100k: Store.Purge removing 100,000 expired denylist
// entries (and their log and index entries) from a bbolt file, fsync on.
func BenchmarkPurge100k(b *testing.B) {
	path, _, base := loadFixture(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, db := copyFixture(b, path)
		b.StartTimer()
		n, err := s.Purge(ctx, base.Add(2*time.Hour))
		b.StopTimer()
		if err != nil || n != benchEntries {
			b.Fatalf("Purge = %d, %v; want %d", n, err, benchEntries)
		}
		db.Close()
		b.StartTimer()
	}
}

func denyJTI(id string, until time.Time) storage.DenyEntry {
	return storage.DenyEntry{Kind: storage.DenyJTI, ID: id, Until: until}
}
