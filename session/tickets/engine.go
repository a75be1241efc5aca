package tickets

import (
	"context"
	"errors"

	"github.com/bffgate/bffgate/session/codec"
)

// Engine keeps sealed session records under their 16-byte ticket ids,
// with indexes by sid and subject fed by each record's clear header. It is
// safe for concurrent use. Values passed in are not retained; a record Get
// returns may be shared with the engine's cache and must not be changed.
type Engine interface {
	// Get returns the record stored under id, or nil when there is none.
	Get(ctx context.Context, id []byte) ([]byte, error)
	// Create stores rec, whose clear header is m, under id and enters it
	// in the indexes. It fails with ErrExists when id is taken.
	Create(ctx context.Context, id, rec []byte, m codec.Meta) error
	// Update runs fn on the record under id (nil: none) and applies the
	// Change it returns, in one atomic step with respect to every other
	// write of that record. When fn returns an error nothing is written
	// and Update returns that error unchanged. An engine with optimistic
	// transactions may run fn more than once; fn must have no effect
	// outside the variables it resets on every run.
	Update(ctx context.Context, id []byte, fn func(rec []byte) (Change, error)) error
	// End removes every record that index ix lists under value and whose
	// clear header match accepts, and returns their headers. Entries that
	// name no record, or a record match refuses, are dropped from the
	// index.
	End(ctx context.Context, ix Index, value string, match func(codec.Meta) bool) ([]codec.Meta, error)
	// Ping reports whether the engine can be read and written.
	Ping(ctx context.Context) error
}

// ErrExists is Create's error for an id already taken.
var ErrExists = errors.New("a record already exists under the ticket id")

// Index names the index End walks.
type Index uint8

const (
	// BySID indexes records by the provider's sid.
	BySID Index = iota + 1
	// BySubject indexes records by the subject.
	BySubject
)

func (ix Index) String() string {
	switch ix {
	case BySID:
		return "sid"
	case BySubject:
		return "subject"
	}
	return "unknown index"
}

// Op is what an Update does to its record.
type Op uint8

const (
	// Keep leaves the record as it is.
	Keep Op = iota
	// Put replaces the record with Change.Record.
	Put
	// Remove deletes the record.
	Remove
)

// Change is the outcome of an Update's function.
type Change struct {
	Op Op
	// Record and Meta are the new sealed record and its clear header
	// (Put).
	Record []byte
	Meta   codec.Meta
	// Old is the clear header of the record read (Put, Remove): the index
	// entries the engine takes out when they no longer apply.
	Old codec.Meta
}
