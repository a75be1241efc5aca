package agents

import (
	"errors"

	"github.com/bffgate/bffgate/e2e/peers"
)

func asPeerError(err error, pe **peers.PeerError) bool { return errors.As(err, pe) }
