package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"

	"github.com/ctxgate/ctxgate/config"
)

// grantTypeTokenExchange is RFC 8693's grant type.
const grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// tokenRequestTimeout bounds one call to a token endpoint. The exchange
// runs detached from the request that started it (others may be waiting
// on the same one), so it needs a bound of its own.
const tokenRequestTimeout = 30 * time.Second

// tokenExchange exchanges each caller's verified access token for a token
// for one upstream (RFC 8693), through x/oauth2's client credentials
// request with the grant type overridden, as its EndpointParams allow.
type tokenExchange struct {
	upstream string
	cfg      *config.TokenExchange
	client   *clientAuth
	cache    *tokenCache
	// fallback, when set, is the gateway's own token for callers that have
	// none to exchange (fallback: client_credentials).
	fallback oauth2.TokenSource
	now      func() time.Time
}

var _ userCredential = (*tokenExchange)(nil)

func newTokenExchange(upstream string, te *config.TokenExchange) (*tokenExchange, error) {
	auth, err := newClientAuth(te.ClientID, te.ClientSecret, te.ClientSecretFile, te.ClientAssertion, te.TokenURL)
	if err != nil {
		return nil, fmt.Errorf("credentials.token_exchange: %w", err)
	}
	x := &tokenExchange{upstream: upstream, cfg: te, client: auth, cache: newTokenCache(time.Now), now: time.Now}
	if te.Fallback == config.FallbackClientCredentials {
		x.fallback = oauth2.ReuseTokenSourceWithExpiry(nil, tokenSourceFunc(x.clientCredentials), te.ExpiryMargin)
	}
	return x, nil
}

// token returns the caller's exchanged token, from the cache while it is
// fresh. Only a token the gateway verified itself (Caller.AccessToken,
// set for oidc principals only) is ever exchanged.
func (x *tokenExchange) token(ctx context.Context, c *Caller) (string, *Delegation, error) {
	if c == nil || c.AccessToken == "" {
		return x.noSubject(c)
	}
	// The subject token is part of the key: a new token (a new login, or
	// one re-issued after revocation) is exchanged anew, and one principal
	// can never be handed a token exchanged for another.
	sum := sha256.Sum256([]byte(c.AccessToken))
	key := strings.Join([]string{x.upstream, c.ID, strings.Join(x.cfg.Scopes, " "), hex.EncodeToString(sum[:])}, "\x00")
	tok, err := x.cache.get(key, x.cfg.ExpiryMargin, func() (*oauth2.Token, error) {
		// Detached: a caller that goes away must not fail the others
		// waiting on the same exchange.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenRequestTimeout)
		defer cancel()
		return x.exchange(ctx, c.AccessToken)
	})
	if err != nil {
		return "", nil, x.failure(err)
	}
	d := delegationOf(x.upstream, "token_exchange", tok.AccessToken)
	c.record(d)
	return tok.AccessToken, d, nil
}

// noSubject handles a caller with no token to exchange.
func (x *tokenExchange) noSubject(c *Caller) (string, *Delegation, error) {
	if x.fallback == nil {
		if c == nil {
			return "", nil, errNoCaller(x.upstream)
		}
		return "", nil, &CredentialError{Upstream: x.upstream, Reason: ReasonNoToken,
			Err: fmt.Errorf("principal kind %s carries no bearer token to exchange and no fallback is configured", c.Kind)}
	}
	tok, err := x.fallback.Token()
	if err != nil {
		return "", nil, x.failure(err)
	}
	d := &Delegation{Upstream: x.upstream, Mode: "client_credentials"}
	if c != nil {
		c.record(d)
	}
	return tok.AccessToken, d, nil
}

// exchange makes one RFC 8693 request.
func (x *tokenExchange) exchange(ctx context.Context, subject string) (*oauth2.Token, error) {
	params := url.Values{
		"grant_type":           {grantTypeTokenExchange}, // replaces client_credentials
		"subject_token":        {subject},
		"subject_token_type":   {x.cfg.SubjectTokenType},
		"requested_token_type": {x.cfg.RequestedTokenType},
	}
	if x.cfg.Audience != "" {
		params.Set("audience", x.cfg.Audience)
	}
	if x.cfg.Resource != "" {
		params.Set("resource", x.cfg.Resource)
	}
	conf, err := x.client.config(x.cfg.TokenURL, x.cfg.Scopes, params, x.now())
	if err != nil {
		return nil, err
	}
	tok, err := conf.Token(x.client.context(ctx))
	if err != nil {
		return nil, err
	}
	// RFC 8693 section 2.2.1: issued_token_type is required; a token of
	// another type than asked for is not sent as a bearer credential.
	if issued, _ := tok.Extra("issued_token_type").(string); issued != "" && issued != x.cfg.RequestedTokenType {
		return nil, fmt.Errorf("token service issued %s, not the requested %s", issued, x.cfg.RequestedTokenType)
	}
	if tok.AccessToken == "" {
		return nil, errors.New("token service answered without an access_token")
	}
	return tok, nil
}

// clientCredentials is the fallback: the gateway's own token.
func (x *tokenExchange) clientCredentials() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), tokenRequestTimeout)
	defer cancel()
	params := url.Values{}
	if x.cfg.Resource != "" {
		params.Set("resource", x.cfg.Resource)
	}
	if x.cfg.Audience != "" {
		params.Set("audience", x.cfg.Audience)
	}
	conf, err := x.client.config(x.cfg.TokenURL, x.cfg.Scopes, params, x.now())
	if err != nil {
		return nil, err
	}
	return conf.Token(x.client.context(ctx))
}

// failure classifies an exchange error for the client's answer and the
// log: the token service's error code is kept, its description is not.
func (x *tokenExchange) failure(err error) error {
	e := &CredentialError{Upstream: x.upstream, Reason: ReasonFailed}
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
		e.Code = re.ErrorCode
		if e.Code == "invalid_grant" {
			e.Reason = ReasonRefused // the caller's token, not the gateway's setup
		}
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		e.Err = fmt.Errorf("token endpoint %s answered HTTP %d", x.cfg.TokenURL, status)
		return e
	}
	e.Err = err
	return e
}

// tokenSourceFunc is a function as an oauth2.TokenSource.
type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

// tokenCache holds issued tokens by key until shortly before they expire.
// Concurrent requests for one key share one fetch (single flight); errors
// are not cached, so the next request tries again.
type tokenCache struct {
	mu        sync.Mutex
	entries   map[string]*oauth2.Token
	flight    singleflight.Group
	now       func() time.Time
	nextSweep time.Time
}

func newTokenCache(now func() time.Time) *tokenCache {
	return &tokenCache{entries: map[string]*oauth2.Token{}, now: now}
}

// get returns the cached token for key if it is valid for longer than
// margin, else fetches one.
func (c *tokenCache) get(key string, margin time.Duration, fetch func() (*oauth2.Token, error)) (*oauth2.Token, error) {
	if tok := c.lookup(key, margin); tok != nil {
		return tok, nil
	}
	v, err, _ := c.flight.Do(key, func() (any, error) {
		if tok := c.lookup(key, margin); tok != nil {
			return tok, nil // fetched while this request waited for the lock
		}
		tok, err := fetch()
		if err != nil {
			return nil, err
		}
		c.store(key, tok)
		return tok, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*oauth2.Token), nil
}

func (c *tokenCache) lookup(key string, margin time.Duration) *oauth2.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	tok := c.entries[key]
	if tok == nil || !tok.Expiry.IsZero() && !c.now().Add(margin).Before(tok.Expiry) {
		return nil
	}
	return tok
}

// store keeps a token with an expiry; one without (no expires_in) is used
// for this request only, as its lifetime is unknown.
func (c *tokenCache) store(key string, tok *oauth2.Token) {
	if tok.Expiry.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.After(c.nextSweep) {
		// Expired entries (principals that stopped calling) are dropped
		// once a minute, so the cache is bounded by the active callers.
		for k, t := range c.entries {
			if !now.Before(t.Expiry) {
				delete(c.entries, k)
			}
		}
		c.nextSweep = now.Add(time.Minute)
	}
	c.entries[key] = tok
}

// len is the number of cached tokens (tests).
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// clientAuth is how the gateway authenticates itself to a token endpoint:
// a client secret (HTTP Basic) or a signed client assertion.
type clientAuth struct {
	id, secret string
	assertion  *assertionSigner
	// httpClient calls token endpoints: never through an upstream's
	// transport, and without following redirects.
	httpClient *http.Client
}

func newClientAuth(id, inline, file string, a *config.ClientAssertion, tokenURL string) (*clientAuth, error) {
	c := &clientAuth{id: id, httpClient: &http.Client{
		Transport:     http.DefaultTransport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if a != nil {
		s, err := newAssertionSigner(id, a)
		if err != nil {
			return nil, err
		}
		c.assertion = s
		return c, nil
	}
	s, err := secret(inline, file)
	if err != nil {
		return nil, err
	}
	c.secret = s
	return c, nil
}

// config is one token request's configuration. A client assertion is new
// for every request (its jti must not repeat).
func (c *clientAuth) config(tokenURL string, scopes []string, params url.Values, now time.Time) (*clientcredentials.Config, error) {
	conf := &clientcredentials.Config{
		ClientID: c.id, TokenURL: tokenURL, Scopes: scopes, EndpointParams: params,
		// Never probe: x/oauth2's auto-detection re-sends a refused request
		// with the secret in the body.
		AuthStyle: oauth2.AuthStyleInHeader,
	}
	if c.assertion == nil {
		conf.ClientSecret = c.secret
		return conf, nil
	}
	jwt, err := c.assertion.sign(now)
	if err != nil {
		return nil, err
	}
	conf.AuthStyle = oauth2.AuthStyleInParams // client_id in the body, no secret
	params.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	params.Set("client_assertion", jwt)
	return conf, nil
}

func (c *clientAuth) context(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, c.httpClient)
}
