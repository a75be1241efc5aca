package issuer

import (
	"fmt"
	"maps"
	"slices"
)

// SetManagedClients makes list the clients the program embedding the
// issuer registers itself, beside issuer.clients: bffgate's gateway
// registers one per frontend that signs in here, and registers them again
// when a configuration reload adds, changes or removes frontends. The
// previous managed set is replaced whole and at once: a client left out
// can get no new grant, and its tokens fail introspection, userinfo and
// refresh; a changed client's new redirect URIs and secret hold from the
// next request.
//
// Each client is checked as an issuer.clients entry is (errors name
// managed_clients[i] and the field). A managed client is a confidential
// or public client of the browser flows: it cannot be an agent or a
// workload (their keys and state are set up at New), nor take the id of
// a configured client or a user's subject, and its resources must be
// listed in issuer.resources. On an error nothing changes.
func (s *Server) SetManagedClients(list []Client) error {
	next := maps.Clone(s.configured)
	for i, c := range list {
		f := fmt.Sprintf("managed_clients[%d]", i)
		if c.Kind != "" {
			return &FieldError{Path: f + ".kind", Msg: fmt.Sprintf("%q: an agent or workload client must be listed in issuer.clients", c.Kind)}
		}
		if err := fillClient(&c); err != nil {
			return clientFieldError(f, err)
		}
		if s.configured[c.ID] != nil {
			return &FieldError{Path: f + ".id", Msg: fmt.Sprintf("client %q is in issuer.clients; a managed client must have an id of its own", c.ID)}
		}
		if _, dup := next[c.ID]; dup {
			return &FieldError{Path: f + ".id", Msg: fmt.Sprintf("client %q is registered twice", c.ID)}
		}
		if s.bySubject[c.ID] != nil {
			return &FieldError{Path: f + ".id", Msg: fmt.Sprintf("%q is also a user's subject; a user's subject and a client id must differ", c.ID)}
		}
		c.Resources = slices.Clone(c.Resources)
		for j, r := range c.Resources {
			if !slices.ContainsFunc(s.cfg.Resources, func(x Resource) bool { return x.URL == r }) {
				return &FieldError{Path: fmt.Sprintf("%s.resources[%d]", f, j), Msg: fmt.Sprintf("%q is not listed in issuer.resources (resources are fixed at start)", r)}
			}
		}
		cl := &client{Client: c, secretDigest: secretDigest(c.Secret)}
		if err := s.cfg.clientAuth(cl); err != nil {
			return clientFieldError(f, err)
		}
		next[c.ID] = cl
	}
	s.clients.Store(&next)
	return nil
}

// client returns the registered client id (configured or managed), or nil.
func (s *Server) client(id string) *client { return (*s.clients.Load())[id] }
