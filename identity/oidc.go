package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-json-experiment/json"

	"github.com/ctxgate/ctxgate/config"
)

// OIDCOptions are an OIDCVerifier's injectable dependencies. Nil and zero
// fields mean the default.
type OIDCOptions struct {
	// Client fetches discovery documents and key sets. Nil is a client with
	// a 10s timeout that follows redirects only on the same scheme and host.
	Client *http.Client
	// Now is the clock for exp, nbf, the token cache and the unknown-kid
	// re-fetch limit; nil is time.Now. Background fetches are paced by
	// real timers.
	Now func() time.Time
	// Log receives background fetch failures and key set changes; nil
	// discards them.
	Log *slog.Logger

	// RetryMin and RetryMax bound the backoff between failed key fetches;
	// zero is 1s and 5m.
	RetryMin, RetryMax time.Duration
	// CacheSize bounds the verified-token cache; zero is 10,000, negative
	// disables the cache.
	CacheSize int
}

const defaultTokenCacheSize = 10_000

// Errors of the cheap checks, allocation-free: they run on every
// presented token before anything is parsed.
var (
	errTokenTooLong = errors.New("token longer than 16 KiB")
	errTokenShape   = errors.New("token is not a compact JWS (three dot-separated segments)")
)

// asymmetricAlgs are the signature algorithms an issuer may be allowed.
// HS* would let anyone holding the verification key mint tokens, and none
// is no signature at all.
var asymmetricAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// OIDCVerifier verifies bearer JWTs from the configured issuers (RFC 9068
// access tokens, or any JWT the issuer signs) with go-oidc over key sets
// the gateway fetches itself. It implements TokenVerifier and is safe for
// concurrent use. The zero value verifies nothing: use NewOIDCVerifier.
type OIDCVerifier struct {
	issuers map[string]*oidcIssuer
	// algs is every issuer's allowed algorithms: the token is parsed once,
	// before its issuer is known; each issuer then checks its own list.
	algs  []jose.SignatureAlgorithm
	now   func() time.Time
	cache *tokenCache
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

var _ TokenVerifier = (*OIDCVerifier)(nil)

// oidcIssuer is one trusted issuer: its configuration, keys and verifier.
type oidcIssuer struct {
	cfg       config.OIDCIssuer
	tokenType string // the required typ, lower case without application/; empty: any
	keys      *keySet
	verifier  *oidc.IDTokenVerifier
}

// NewOIDCVerifier builds one verifier per configured issuer. It returns at
// once; discovery (<issuer>/.well-known/openid-configuration, whose issuer
// must match exactly) and the first JWKS fetch run in the background,
// retried with capped exponential backoff; until they succeed, tokens of
// that issuer are refused (fail closed). Close stops every background
// goroutine. The configuration must have its defaults applied.
func NewOIDCVerifier(cfgs []config.OIDCIssuer, opts OIDCOptions) (*OIDCVerifier, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("auth.oidc: no issuer configured")
	}
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	v := &OIDCVerifier{issuers: map[string]*oidcIssuer{}, now: opts.Now, cache: newTokenCache(opts.CacheSize), stop: cancel}
	for i, c := range cfgs {
		algs, err := checkIssuerConfig(c)
		if err == nil && v.issuers[c.Issuer] != nil {
			err = errors.New("issuer configured twice")
		}
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth.oidc[%d] (%s): %w", i, c.Issuer, err)
		}
		is := &oidcIssuer{cfg: c, tokenType: normalizeTyp(c.TokenType), keys: newKeySet(ctx, c.Issuer, algs, opts)}
		now, skew := opts.Now, c.ClockSkew
		is.verifier = oidc.NewVerifier(c.Issuer, is.keys, &oidc.Config{
			SupportedSigningAlgs: c.Algorithms,
			// The audience is checked per route by checkAudience: it must
			// name this gateway or the route, which go-oidc cannot know.
			SkipClientIDCheck: true,
			// go-oidc refuses exp < Now(); shifting Now back tolerates
			// clock_skew. nbf is checked with the same skew in principal.
			Now: func() time.Time { return now().Add(-skew) },
		})
		v.issuers[c.Issuer] = is
		for _, a := range algs {
			if !slices.Contains(v.algs, a) {
				v.algs = append(v.algs, a)
			}
		}
	}
	for _, is := range v.issuers {
		v.wg.Go(func() { is.keys.run(ctx, is.cfg.JWKSRefresh, opts.RetryMin, opts.RetryMax) })
	}
	return v, nil
}

func (o OIDCOptions) withDefaults() OIDCOptions {
	if o.Client == nil {
		o.Client = defaultOIDCClient()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.CacheSize == 0 {
		o.CacheSize = defaultTokenCacheSize
	}
	return o
}

// defaultOIDCClient fetches metadata and keys. A redirect to another host
// (or scheme) is refused: it could hand the gateway someone else's keys.
func defaultOIDCClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
				return fmt.Errorf("redirect from %s to %s://%s refused: another host", via[0].URL.Host, req.URL.Scheme, req.URL.Host)
			}
			return nil
		},
	}
}

// checkIssuerConfig re-checks what config validation guarantees, since a
// mistake here (an HS algorithm, a zero refresh) would be a security bug
// or a busy loop rather than a config error.
func checkIssuerConfig(c config.OIDCIssuer) ([]jose.SignatureAlgorithm, error) {
	switch {
	case c.Issuer == "":
		return nil, errors.New("issuer is empty")
	case len(c.Algorithms) == 0:
		return nil, errors.New("no algorithms allowed")
	case c.ClockSkew < 0:
		return nil, errors.New("clock_skew is negative")
	case c.JWKSRefresh <= 0:
		return nil, errors.New("jwks_refresh must be positive")
	case c.Claims.Subject == "":
		return nil, errors.New("claims.subject is empty")
	}
	algs := make([]jose.SignatureAlgorithm, 0, len(c.Algorithms))
	for _, a := range c.Algorithms {
		if !slices.Contains(asymmetricAlgs, a) {
			return nil, fmt.Errorf("algorithm %q not allowed: use one of %s", a, strings.Join(asymmetricAlgs, ", "))
		}
		algs = append(algs, jose.SignatureAlgorithm(a))
	}
	return algs, nil
}

// normalizeTyp lower-cases a media type and drops "application/", which
// RFC 7515 section 4.1.9 lets a typ header omit.
func normalizeTyp(typ string) string {
	t := strings.ToLower(typ)
	if rest, ok := strings.CutPrefix(t, "application/"); ok {
		return rest
	}
	return t
}

// Verify returns the principal of a token valid for the route whose
// canonical URL is resource. The returned principal may be shared with
// other requests presenting the same token: treat it as read-only.
func (v *OIDCVerifier) Verify(ctx context.Context, token, resource string) (*Principal, error) {
	// Size and shape before any parsing, hashing or lookup, so a huge or
	// garbled credential costs nothing (and never reaches the IdP).
	if len(token) > MaxCredentialBytes {
		return nil, errTokenTooLong
	}
	if strings.Count(token, ".") != 2 {
		return nil, errTokenShape
	}
	now := v.now()
	key := sha256.Sum256([]byte(token))
	if p, hit, err := v.cached(key, now, resource); hit {
		return p, err
	}
	jws, claims, is, err := v.peek(token)
	if err != nil {
		return nil, err
	}
	// Taken before verifying: a key removed meanwhile makes the entry stale.
	gen := is.keys.generation()
	p, err := is.verify(ctx, token, jws, claims, now)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", is.cfg.Issuer, err)
	}
	if err := is.checkAudience(p.Audience, resource); err != nil {
		return nil, fmt.Errorf("issuer %s: %w", is.cfg.Issuer, err)
	}
	v.cache.put(key, cachedToken{p: p, iss: is, gen: gen}, now)
	return p, nil
}

// cached answers from the verified-token cache. Expiry and the audience
// are checked on every hit: the cache must not outlive the token, and a
// token verified for one route is not thereby valid for another. An entry
// whose key the issuer removed since is a miss, so the token is verified
// again (and refused).
func (v *OIDCVerifier) cached(key [sha256.Size]byte, now time.Time, resource string) (p *Principal, hit bool, err error) {
	e, ok := v.cache.get(key)
	if !ok || e.gen != e.iss.keys.generation() {
		return nil, false, nil
	}
	if e.expired(now) {
		v.cache.remove(key)
		return nil, true, fmt.Errorf("issuer %s: token expired at %s", e.iss.cfg.Issuer, e.p.Expiry.UTC().Format(time.RFC3339))
	}
	if err := e.iss.checkAudience(e.p.Audience, resource); err != nil {
		return nil, true, fmt.Errorf("issuer %s: %w", e.iss.cfg.Issuer, err)
	}
	return e.p, true, nil
}

// peek parses the token once and picks its issuer by the unverified iss.
// Nothing is trusted yet: iss only selects which issuer's keys and rules
// the token is then verified with.
func (v *OIDCVerifier) peek(token string) (*jose.JSONWebSignature, map[string]any, *oidcIssuer, error) {
	jws, err := jose.ParseSignedCompact(token, v.algs)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("malformed token: %w", err)
	}
	// Strict decoding (no duplicate names, valid UTF-8): the claims go-oidc
	// reads and the ones the principal is built from cannot differ.
	var claims map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		return nil, nil, nil, fmt.Errorf("token claims: %w", err)
	}
	iss, _ := claims["iss"].(string)
	is := v.issuers[iss]
	if is == nil {
		return nil, nil, nil, fmt.Errorf("token issuer %.200q is not trusted", iss)
	}
	return jws, claims, is, nil
}

// verify checks the header, then (go-oidc) the signature, iss and exp,
// then builds the principal. claims were decoded from the very payload
// whose signature the key set verifies.
func (is *oidcIssuer) verify(ctx context.Context, token string, jws *jose.JSONWebSignature, claims map[string]any, now time.Time) (*Principal, error) {
	if err := is.checkType(jws.Signatures[0].Protected); err != nil {
		return nil, err
	}
	// A token without exp would be valid forever (go-oidc would refuse it
	// too, as expired in year 1; this says why).
	if _, ok := claims["exp"]; !ok {
		return nil, errors.New("token has no exp")
	}
	// The key is looked up (and, within the limit, fetched) before go-oidc
	// runs: go-oidc flattens the key set's errors to text, and a token
	// that cannot be checked yet must be told apart from a bad one.
	h := jws.Signatures[0].Protected
	if !slices.Contains(is.keys.algs, jose.SignatureAlgorithm(h.Algorithm)) {
		return nil, fmt.Errorf("algorithm %.16q not allowed for this issuer", h.Algorithm)
	}
	if _, err := is.keys.keysFor(ctx, h.KeyID, h.Algorithm); err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, parsedJWSKey{}, &parsedJWS{raw: token, jws: jws})
	idt, err := is.verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	return is.principal(idt, claims, now)
}

// checkType enforces token_type. RFC 9068 section 4: an access token is
// typed at+jwt, which keeps an ID token (typ JWT) from being replayed as
// an access token.
func (is *oidcIssuer) checkType(h jose.Header) error {
	if is.tokenType == "" {
		return nil
	}
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if normalizeTyp(typ) != is.tokenType {
		return fmt.Errorf("token typ %.40q, want %q", typ, is.cfg.TokenType)
	}
	return nil
}

func (is *oidcIssuer) principal(idt *oidc.IDToken, claims map[string]any, now time.Time) (*Principal, error) {
	c := is.cfg
	// RFC 7519 section 4.1.5, with the same skew as exp: go-oidc's own nbf
	// leeway is a fixed 5 minutes.
	if nbf, ok := claims["nbf"]; ok {
		n, isNum := nbf.(float64)
		if !isNum {
			return nil, errors.New("token nbf is not a number")
		}
		if n > float64(now.Add(c.ClockSkew).Unix()) {
			return nil, fmt.Errorf("token not valid before %s", time.Unix(int64(n), 0).UTC().Format(time.RFC3339))
		}
	}
	// The subject names the principal (and its sessions): without one,
	// two callers could share an identity.
	sub, _ := claims[c.Claims.Subject].(string)
	if sub == "" {
		return nil, fmt.Errorf("token has no %q claim (the subject)", c.Claims.Subject)
	}
	// RFC 9068 section 4: an access token without aud could be meant for
	// any service.
	if len(idt.Audience) == 0 {
		return nil, errors.New("token has no aud")
	}
	scopes, err := claimStrings(claims, c.Claims.Scopes, true)
	if err != nil {
		return nil, err
	}
	groups, err := claimStrings(claims, c.Claims.Groups, false)
	if err != nil {
		return nil, err
	}
	return &Principal{
		ID: "oidc:" + c.Issuer + "#" + sub, Kind: "oidc", Issuer: c.Issuer, Subject: sub,
		Scopes: scopes, Groups: groups, Claims: claims, Audience: idt.Audience, Expiry: idt.Expiry,
	}, nil
}

// checkAudience requires the token to be meant for this gateway (one of
// the issuer's audiences) or for this very route (RFC 8707 resource).
// Values compare exactly; there is no wildcard.
func (is *oidcIssuer) checkAudience(aud []string, resource string) error {
	for _, a := range aud {
		if a != "" && (a == resource || slices.Contains(is.cfg.Audiences, a)) {
			return nil
		}
	}
	return fmt.Errorf("token aud %.200q names neither this gateway nor the route %s", aud, resource)
}

// claimStrings collects the strings of the named claims, in order and
// without duplicates. A claim may be a string (split on spaces when split
// is set, as OAuth scope is) or an array of strings. Any other shape
// refuses the token: silently dropping a malformed group could let a
// token slip past a policy that denies that group.
func claimStrings(claims map[string]any, names []string, split bool) ([]string, error) {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, name := range names {
		switch v := claims[name].(type) {
		case nil:
		case string:
			if !split {
				add(v)
				continue
			}
			for f := range strings.FieldsSeq(v) {
				add(f)
			}
		case []any:
			for i, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("token claim %q[%d] is not a string", name, i)
				}
				add(s)
			}
		default:
			return nil, fmt.Errorf("token claim %q is neither a string nor an array of strings", name)
		}
	}
	return out, nil
}

// Ready reports whether every issuer has keys to verify tokens with.
func (v *OIDCVerifier) Ready() bool {
	for _, is := range v.issuers {
		if !is.keys.ready() {
			return false
		}
	}
	return true
}

// Refresh runs one discovery-and-fetch cycle for every issuer now and
// waits for it, without waiting for the background schedule.
func (v *OIDCVerifier) Refresh(ctx context.Context) error {
	var errs []error
	for iss, is := range v.issuers {
		if err := is.keys.refresh(ctx, true); err != nil {
			errs = append(errs, fmt.Errorf("issuer %s: %w", iss, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops every background fetch and waits for it to end. Tokens are
// still verified with the keys already fetched.
func (v *OIDCVerifier) Close() {
	v.stop()
	v.wg.Wait()
}

// tokenCache holds principals of verified tokens, keyed by the SHA-256 of
// the whole token. Never cached: a token that failed any check, so a
// refusal is always re-decided. Not in the key: the route, since the
// audience is re-checked on every hit. A nil or disabled cache holds
// nothing.
type tokenCache struct {
	max int
	mu  sync.RWMutex
	m   map[[sha256.Size]byte]cachedToken
}

type cachedToken struct {
	p   *Principal
	iss *oidcIssuer
	gen uint64 // the issuer's key generation when the token was verified
}

// expired mirrors go-oidc's exp check with the issuer's skew.
func (e cachedToken) expired(now time.Time) bool {
	return now.Add(-e.iss.cfg.ClockSkew).After(e.p.Expiry)
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: map[[sha256.Size]byte]cachedToken{}}
}

func (c *tokenCache) get(key [sha256.Size]byte) (cachedToken, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[key]
	return e, ok
}

func (c *tokenCache) remove(key [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// put adds an entry. A full cache first drops expired and stale entries,
// then arbitrary ones down to 90%, so filling it costs one sweep per
// tenth of its size rather than one per insert.
func (c *tokenCache) put(key [sha256.Size]byte, e cachedToken, now time.Time) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k, old := range c.m {
			if old.expired(now) || old.gen != old.iss.keys.generation() {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max*9/10 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = e
}

func (c *tokenCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
