package gateway

import (
	"errors"
	"fmt"

	"github.com/ctxgate/ctxgate/session"
)

// sessionClaims is what a session id carries (session.Claims), under the
// name the gateway's handlers have always used for it.
type sessionClaims = session.Claims

// A federated list's cursor is minted by the gateway: a sealed box (the
// session key, format cursorFormat, so it never opens as a session id)
// holding the route, the principal, the list method and, for every member
// whose list goes on, that member's own cursor. A client can neither read
// nor alter it: a tampered cursor is an invalid-params error, like an
// unknown one.

const cursorFormat = 2

// fedCursor is what a federated list cursor carries.
type fedCursor struct {
	Route     string         `json:"r"`
	Principal string         `json:"p"`
	Method    string         `json:"m"`
	Pending   []memberCursor `json:"q"`
	IssuedAt  int64          `json:"iat"`
}

// memberCursor is one member's place in its own list.
type memberCursor struct {
	Member string `json:"u"`
	Cursor string `json:"c,omitempty"`
}

var errCursorInvalid = errors.New("invalid cursor")

// sealCursor seals c with the session key, stamped with the sealer's clock.
func sealCursor(s *session.Sealer, c fedCursor) (string, error) {
	c.IssuedAt = s.Now().Unix()
	return s.SealAs(cursorFormat, c)
}

// openCursor opens a cursor and checks it was minted for this route,
// principal and method, within the session lifetime.
func openCursor(s *session.Sealer, id, route, principal, method string) (fedCursor, error) {
	var c fedCursor
	if err := s.OpenAs(cursorFormat, id, &c); err != nil {
		return fedCursor{}, fmt.Errorf("%w: %w", errCursorInvalid, err)
	}
	switch {
	case c.Route != route, c.Principal != principal, c.Method != method:
		return fedCursor{}, fmt.Errorf("%w: minted for another route, principal or list", errCursorInvalid)
	case s.Expired(c.IssuedAt):
		return fedCursor{}, fmt.Errorf("%w: expired", errCursorInvalid)
	case len(c.Pending) == 0:
		return fedCursor{}, fmt.Errorf("%w: nothing pending", errCursorInvalid)
	}
	return c, nil
}
