package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Caller is who an upstream request is made for: the principal the gateway
// verified. Credential sources that call the upstream as the user
// (token_exchange, user_oauth) read it from the request's context.
type Caller struct {
	// ID is the principal's stable id, e.g. "oidc:<issuer>#<sub>".
	ID string
	// Kind is "oidc", "mtls", "api_key" or "anonymous".
	Kind string
	// AccessToken is the bearer token the gateway verified itself (oidc
	// principals only; empty otherwise). It is exchanged, never forwarded,
	// and never logged: Caller's LogValue and String leave it out.
	AccessToken string
	// Expiry of AccessToken.
	Expiry time.Time

	mu          sync.Mutex
	delegations map[string]*Delegation
}

// LogValue keeps the token out of every log line a Caller is passed to.
func (c *Caller) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", c.ID), slog.String("kind", c.Kind))
}

// String is the principal id, so %v never prints the token either.
func (c *Caller) String() string { return c.ID }

// Delegation is what the gateway learned of the token it obtained for a
// caller at one upstream: the delegation chain for the audit records.
type Delegation struct {
	// Upstream the token was obtained for.
	Upstream string `json:"upstream"`
	// Mode is "token_exchange", "client_credentials" (the fallback: the
	// gateway's own token, naming no user) or "user_oauth".
	Mode string `json:"mode"`
	// Subject is the issued token's sub, when it is a JWT.
	Subject string `json:"sub,omitempty"`
	// Act is the issued token's act claim (RFC 8693 section 4.1), when
	// present: who acts for the subject. Read from the token the token
	// service returned over the gateway's own authenticated connection;
	// its signature is not checked (the gateway is not its audience and
	// may not have the key), so it is an audit record, not an identity.
	Act map[string]any `json:"act,omitempty"`
}

// Delegations returns what was recorded for this caller, by upstream.
func (c *Caller) Delegations() []*Delegation {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Delegation, 0, len(c.delegations))
	for _, d := range c.delegations {
		out = append(out, d)
	}
	return out
}

func (c *Caller) record(d *Delegation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.delegations == nil {
		c.delegations = map[string]*Delegation{}
	}
	c.delegations[d.Upstream] = d
}

type callerKey struct{}

// WithCaller returns ctx carrying the caller every upstream request made
// with it is for.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerOf returns the caller set by WithCaller, or nil.
func CallerOf(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// ErrCredential is what every *CredentialError matches with errors.Is: the
// gateway could not get the credential a request to this upstream needs,
// so nothing was sent.
var ErrCredential = errors.New("no upstream credential for this caller")

// CredentialError says why a caller has no credential for an upstream.
type CredentialError struct {
	Upstream string
	// Reason is one of the Reason* constants.
	Reason string
	// Code is the token service's RFC 6749 error code, when it answered one
	// (invalid_grant, invalid_client, ...). Its error_description is never
	// kept: it may quote what was sent.
	Code string
	// Link is the single-use connect link minted for the caller
	// (ReasonNotConnected): the gateway's /oauth/connect/<upstream>?link=.
	Link string
	Err  error
}

// Reasons of a CredentialError.
const (
	// ReasonNoToken: the caller has no verified bearer token to exchange
	// (API key, certificate, anonymous) and no fallback is configured.
	ReasonNoToken = "no_subject_token"
	// ReasonRefused: the token service refused the caller's token
	// (invalid_grant: expired, revoked, or not exchangeable).
	ReasonRefused = "refused"
	// ReasonFailed: the exchange failed for another reason: the gateway's
	// own client was refused, or the token service is unreachable.
	ReasonFailed = "failed"
	// ReasonNotConnected: the user has not connected their account.
	ReasonNotConnected = "not_connected"
)

func (e *CredentialError) Error() string {
	msg := "upstream " + e.Upstream + ": " + e.Reason
	if e.Code != "" {
		msg += ": token service error " + e.Code
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes every CredentialError match ErrCredential.
func (e *CredentialError) Is(target error) bool { return target == ErrCredential }

// Unwrap exposes the cause.
func (e *CredentialError) Unwrap() error { return e.Err }

// userCredential is a credential source that calls an upstream as the
// caller: it returns the token to send for this caller.
type userCredential interface {
	token(ctx context.Context, c *Caller) (string, *Delegation, error)
}

// Prepare obtains, before anything is sent, the credential the upstream
// needs for the caller in ctx, and returns what was learned of it. It
// returns nil, nil for an upstream whose credential is the gateway's own.
// The token is cached, so the request that follows reuses it.
func (u *Upstream) Prepare(ctx context.Context) (*Delegation, error) {
	if u.user == nil {
		return nil, nil
	}
	_, d, err := u.user.token(ctx, CallerOf(ctx))
	return d, err
}

// CallsAsUser reports whether requests to the upstream carry a credential
// naming the caller (token_exchange, user_oauth), so its answers may be
// per user whatever it claims.
func (u *Upstream) CallsAsUser() bool { return u.user != nil }

// callerTransport sets the caller's token on every request. A credential
// failure is returned as a *CredentialError and nothing is sent.
type callerTransport struct {
	base http.RoundTripper
	src  userCredential
}

func (t *callerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, _, err := t.src.token(req.Context(), CallerOf(req.Context()))
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(req)
}

// CloseIdleConnections reaches the wrapped transport.
func (t *callerTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// jwtClaims decodes a JWT's payload without verifying it; see Delegation.Act
// for why that is enough for what it is used for. Not a JWT: nil.
func jwtClaims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(parts[1]) > 64<<10 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return nil
	}
	return claims
}

// delegationOf describes a token issued for upstream.
func delegationOf(upstream, mode, token string) *Delegation {
	d := &Delegation{Upstream: upstream, Mode: mode}
	claims := jwtClaims(token)
	d.Subject, _ = claims["sub"].(string)
	d.Act, _ = claims["act"].(map[string]any)
	return d
}

func errNoCaller(upstream string) error {
	return &CredentialError{Upstream: upstream, Reason: ReasonNoToken, Err: fmt.Errorf("request has no verified caller")}
}
