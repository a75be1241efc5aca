package main

import (
	"github.com/bffgate/bffgate/bff/authz"
	"github.com/bffgate/bffgate/bff/spa"
)

// SPA is gateway.spa: where the SPA comes from (spa.Config's keys) and who
// may load it (allow, deny and claims_from, as on gateway.routes[]; the
// gateway decides them, see bff.Config.SPARules).
type SPA struct {
	spa.Config `yaml:",inline"`
	Rules      authz.Policy `yaml:",inline"`
}
