// Package tickets holds the rules of the gateway's server-side session
// stores once, over an Engine that keeps sealed records: session/bolt (a
// bbolt file) and session/redis (Redis) are each an Engine and a thin
// Store on it, as the issuer's state is storage.Rules over its engines.
//
// # Tickets
//
// The stores follow oauth2-proxy's session tickets: the browser's cookie
// carries a codec.Ticket, a random 16-byte id and a random 32-byte key; the
// engine holds, under the id, the session encrypted with AES-256-GCM under
// that key (codec.Seal). The key is never stored, so a copy of the backend
// reveals no token and no claim, and a handle with an altered key opens
// nothing, changes nothing and deletes nothing.
//
// # Rules and engines
//
// The rules are what every server-side store must agree on: a fresh
// ticket per Create (no fixation); an expired session is gone (Get answers
// not found, Update removes it and commits the removal); Update applies
// the caller's function to the opened session, raises its Version and
// reseals it under the same ticket in one atomic step, or removes it when
// the function left it expired; only the holder of the key deletes; ending
// by sid or subject ends exactly the sessions whose authenticated clear
// header carries the value, and counts the live ones; every operation is
// counted in bffgate_session_<engine>_operations_total.
//
// An engine knows records, their clear headers (codec.Meta: sid, subject,
// expiry) and the indexes those feed, never a session's content: it has no
// key. Its operations are atomic on one record; how (a bbolt transaction,
// a Redis WATCH/MULTI retried on conflict) is its business.
//
// # Errors
//
// Engine errors that mean the backend cannot serve (a full disk, a
// read-only file, a lost connection, a conflict that outlasted the
// retries) match session.ErrUnavailable, which the gateway answers with
// 503 while keeping the session; the rules add the store's name and the
// operation.
package tickets
