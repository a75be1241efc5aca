package bff_test

import (
	"context"
	"crypto/rand"
	"log"
	"time"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/datafile"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
)

func key(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// The gateway in front of an SPA on https://app.example.com, with sessions
// in the data directory's bbolt file and one API route.
func ExampleNew() {
	ctx := context.Background()
	db, err := datafile.Open("/var/lib/bffgate/bffgate.db", 5*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	store, err := sessionbolt.New(db, sessionbolt.Config{})
	if err != nil {
		log.Fatal(err)
	}
	cfg := bff.DefaultConfig()
	cfg.PublicURL = "https://app.example.com"
	cfg.Provider.IssuerURL = "https://login.example.com"
	cfg.Provider.ClientID = "bff"
	cfg.Provider.ClientSecret = "from a secret store"
	cfg.Store = store
	cfg.Cookie.FlowKeys = []bff.KeyPair{{Hash: key(32), Block: key(32)}}
	cfg.Routes = []bff.Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://orders:8080"}, Policy: bff.PolicyUser}}

	gw, err := bff.New(ctx, cfg) // fails at once, naming the issuer, when discovery does
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = gw.Run(ctx) }()
	log.Fatal(gw.App().Listen("127.0.0.1:8080"))
}
