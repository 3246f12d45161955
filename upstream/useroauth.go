package upstream

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/ctxgate/ctxgate/config"
)

// connectTTL bounds a connect link and an authorization in progress: long
// enough to sign in at the provider, short enough that a leaked link soon
// stops working.
const connectTTL = 10 * time.Minute

// maxPending bounds the links and authorizations kept in memory, so a
// caller minting links cannot grow the gateway without bound.
const maxPending = 10000

// Connector runs the connect-your-account flow of a user_oauth upstream:
// the authorization code grant with PKCE (S256), its state bound to the
// principal that asked and to the browser that started it. Users' grants
// are kept in a GrantStore and refreshed when they expire.
type Connector struct {
	upstream string
	conf     *oauth2.Config
	resource string
	store    *GrantStore
	client   *http.Client
	now      func() time.Time

	mu      sync.Mutex
	live    map[string]*oauth2.Token // principal -> current token
	links   map[string]*connectLink  // link id -> who may start a flow with it
	pending map[string]*pendingAuth  // state -> the flow it belongs to
	flight  singleflight.Group
}

var _ userCredential = (*Connector)(nil)

type connectLink struct {
	principal string
	expires   time.Time
}

type pendingAuth struct {
	principal string
	verifier  string
	browser   [sha256.Size]byte // hash of the cookie the starting browser got
	expires   time.Time
}

func newConnector(upstream string, uo *config.UserOAuth, store *GrantStore) (*Connector, error) {
	if store == nil {
		return nil, errors.New("credentials.user_oauth: needs grants (grants.dir and grants.keys)")
	}
	sec, err := secret(uo.ClientSecret, uo.ClientSecretFile)
	if err != nil {
		return nil, fmt.Errorf("credentials.user_oauth: %w", err)
	}
	return &Connector{
		upstream: upstream,
		conf: &oauth2.Config{
			ClientID: uo.ClientID, ClientSecret: sec, Scopes: uo.Scopes, RedirectURL: uo.RedirectURL,
			Endpoint: oauth2.Endpoint{AuthURL: uo.AuthorizationEndpoint, TokenURL: uo.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader},
		},
		resource: uo.Resource,
		store:    store,
		client: &http.Client{
			Transport:     http.DefaultTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now:     time.Now,
		live:    map[string]*oauth2.Token{},
		links:   map[string]*connectLink{},
		pending: map[string]*pendingAuth{},
	}, nil
}

// token returns the caller's current access token for the upstream,
// refreshing (and re-storing) it when it has expired. A caller who has not
// connected gets ReasonNotConnected with a fresh connect link.
func (c *Connector) token(ctx context.Context, caller *Caller) (string, *Delegation, error) {
	if caller == nil || caller.Kind == "anonymous" {
		// Every anonymous request is the same principal: a grant stored for
		// it would be handed to everyone.
		return "", nil, &CredentialError{Upstream: c.upstream, Reason: ReasonNoToken, Err: errors.New("a connected account needs an identified caller")}
	}
	v, err, _ := c.flight.Do(caller.ID, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenRequestTimeout)
		defer cancel()
		return c.current(ctx, caller.ID)
	})
	if err != nil {
		return "", nil, err
	}
	tok := v.(*oauth2.Token)
	d := delegationOf(c.upstream, "user_oauth", tok.AccessToken)
	caller.record(d)
	return tok.AccessToken, d, nil
}

func (c *Connector) current(ctx context.Context, principal string) (*oauth2.Token, error) {
	c.mu.Lock()
	tok := c.live[principal]
	c.mu.Unlock()
	if tok == nil {
		var err error
		if tok, err = c.store.Get(principal, c.upstream); errors.Is(err, ErrNoGrant) {
			return nil, c.notConnected(principal)
		} else if err != nil {
			return nil, &CredentialError{Upstream: c.upstream, Reason: ReasonFailed, Err: err}
		}
	}
	if tok.Valid() {
		c.remember(principal, tok)
		return tok, nil
	}
	fresh, err := c.conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, c.client), tok).Token()
	if err != nil {
		re, ok := errors.AsType[*oauth2.RetrieveError](err)
		if !ok && tok.RefreshToken != "" {
			return nil, &CredentialError{Upstream: c.upstream, Reason: ReasonFailed, Err: fmt.Errorf("refresh: %w", err)}
		}
		if ok && re.ErrorCode != "invalid_grant" {
			return nil, &CredentialError{Upstream: c.upstream, Reason: ReasonFailed, Code: re.ErrorCode, Err: errors.New("refresh refused")}
		}
		// The grant is gone (revoked at the provider, or it never had a
		// refresh token): forget it and ask the user to connect again.
		if _, err := c.Disconnect(principal); err != nil {
			return nil, &CredentialError{Upstream: c.upstream, Reason: ReasonFailed, Err: err}
		}
		return nil, c.notConnected(principal)
	}
	// A rotated refresh token must be kept, or the next refresh fails.
	if err := c.store.Put(principal, c.upstream, fresh); err != nil {
		return nil, &CredentialError{Upstream: c.upstream, Reason: ReasonFailed, Err: err}
	}
	c.remember(principal, fresh)
	return fresh, nil
}

func (c *Connector) remember(principal string, tok *oauth2.Token) {
	c.mu.Lock()
	c.live[principal] = tok
	c.mu.Unlock()
}

// notConnected mints a connect link for principal (replacing none: each
// link is single-use and short-lived) and says so.
func (c *Connector) notConnected(principal string) error {
	id := randomID()
	c.mu.Lock()
	c.sweep()
	if len(c.links) < maxPending {
		c.links[id] = &connectLink{principal: principal, expires: c.now().Add(connectTTL)}
	}
	c.mu.Unlock()
	return &CredentialError{Upstream: c.upstream, Reason: ReasonNotConnected, Link: id, Err: errors.New("no connected account")}
}

// sweep drops expired links and flows. Callers hold c.mu.
func (c *Connector) sweep() {
	now := c.now()
	for id, l := range c.links {
		if !now.Before(l.expires) {
			delete(c.links, id)
		}
	}
	for st, p := range c.pending {
		if !now.Before(p.expires) {
			delete(c.pending, st)
		}
	}
}

// LinkPrincipal returns the principal a connect link was made for, so the
// page can ask the user to confirm it is them; false for an unknown or
// expired link.
func (c *Connector) LinkPrincipal(link string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.links[link]
	if l == nil || !c.now().Before(l.expires) {
		return "", false
	}
	return l.principal, true
}

// ErrConnectLink: the link is unknown, used or expired.
var ErrConnectLink = errors.New("connect link unknown, already used or expired")

// Begin spends a connect link and starts the authorization: it returns the
// provider URL to send the browser to. browser is a secret the gateway set
// as a cookie in the browser; Complete requires the same one, so the flow
// finishes in the browser that started it.
func (c *Connector) Begin(link, browser string) (string, error) {
	state, verifier := randomID(), oauth2.GenerateVerifier()
	c.mu.Lock()
	l := c.links[link]
	delete(c.links, link) // single use, whatever happens next
	ok := l != nil && c.now().Before(l.expires) && len(c.pending) < maxPending
	if ok {
		c.pending[state] = &pendingAuth{principal: l.principal, verifier: verifier, browser: sha256.Sum256([]byte(browser)), expires: c.now().Add(connectTTL)}
	}
	c.mu.Unlock()
	if !ok {
		return "", ErrConnectLink
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if c.resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", c.resource))
	}
	return c.conf.AuthCodeURL(state, opts...), nil
}

// ErrConnectState: the callback's state is unknown, used, expired, or
// from another browser.
var ErrConnectState = errors.New("authorization state unknown, already used, expired or from another browser")

// Owns reports whether state is a flow of this connector in progress.
func (c *Connector) Owns(state string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[state] != nil
}

// Complete finishes the authorization: it redeems code with the PKCE
// verifier of state's flow, stores the grant for the principal the flow
// was started for, and returns that principal.
func (c *Connector) Complete(ctx context.Context, state, code, browser string) (string, error) {
	c.mu.Lock()
	p := c.pending[state]
	delete(c.pending, state) // single use: a replayed callback is refused
	c.mu.Unlock()
	sum := sha256.Sum256([]byte(browser))
	if p == nil || !c.now().Before(p.expires) || subtle.ConstantTimeCompare(sum[:], p.browser[:]) != 1 {
		return "", ErrConnectState
	}
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(p.verifier)}
	if c.resource != "" {
		opts = append(opts, oauth2.SetAuthURLParam("resource", c.resource))
	}
	ctx, cancel := context.WithTimeout(ctx, tokenRequestTimeout)
	defer cancel()
	tok, err := c.conf.Exchange(context.WithValue(ctx, oauth2.HTTPClient, c.client), code, opts...)
	if err != nil {
		e := &CredentialError{Upstream: c.upstream, Reason: ReasonRefused, Err: errors.New("authorization code not redeemed")}
		if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
			e.Code = re.ErrorCode
		} else {
			e.Reason, e.Err = ReasonFailed, err
		}
		return "", e
	}
	if err := c.store.Put(p.principal, c.upstream, tok); err != nil {
		return "", err
	}
	c.remember(p.principal, tok)
	return p.principal, nil
}

// Disconnect forgets the principal's grant (stored and in memory); it
// reports whether there was one. The provider is not told: user_oauth has
// no revocation endpoint configured.
func (c *Connector) Disconnect(principal string) (bool, error) {
	c.mu.Lock()
	_, live := c.live[principal]
	delete(c.live, principal)
	c.mu.Unlock()
	stored, err := c.store.Delete(principal, c.upstream)
	return live || stored, err
}

func randomID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
