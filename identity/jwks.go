package identity

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

const (
	// maxMetadataBytes bounds a discovery document or a JWKS: real ones are
	// a few KiB, and an IdP (or whoever answers for it) must not make the
	// gateway buffer without limit.
	maxMetadataBytes = 1 << 20
	// unknownKidRefetchEvery is how often a token naming a key id the set
	// does not hold may make the gateway re-fetch the JWKS. A flood of
	// random-kid tokens then costs the IdP one request per period.
	unknownKidRefetchEvery = 30 * time.Second
	// minRSABits: RSA keys below 2048 bits are not trusted (NIST SP 800-131A).
	minRSABits = 2048
	// maxKidBytes: a longer key id is never looked for at the IdP (real
	// ones are short), so it costs neither a fetch nor memory.
	maxKidBytes = 256
	// maxUnknownKids bounds the key ids remembered as not published.
	maxUnknownKids = 1024
	// minJWKSMaxAge is the floor under a JWKS's Cache-Control max-age: an
	// IdP (or whoever answers for it) cannot make the gateway poll it
	// more often than this.
	minJWKSMaxAge = time.Minute
	// noKeysRetryAfter is the Retry-After of a token refused because its
	// issuer's keys were never fetched.
	noKeysRetryAfter = 5 * time.Second
)

// errRefetchLimited is an unknown-kid re-fetch refused by the limit.
var errRefetchLimited = errors.New("key set re-fetched recently")

// keysUnavailableError is a token that could not be checked yet, rather
// than one that failed: its issuer's keys were never fetched (cold
// start), or it names a key id that no fetch since the id first appeared
// has looked for (a key rotated in while the re-fetch limit was spent).
// It is answered 503 with Retry-After, never 401 invalid_token, so a
// client keeps its token and retries. Matches errKeysUnavailable.
type keysUnavailableError struct {
	reason     string
	retryAfter time.Duration
}

// errKeysUnavailable is what errors.Is matches a *keysUnavailableError to.
var errKeysUnavailable = errors.New("issuer's signing keys unavailable")

func (e *keysUnavailableError) Error() string        { return e.reason }
func (e *keysUnavailableError) Is(target error) bool { return target == errKeysUnavailable }

// keySet is one issuer's trusted signing keys: discovered from
// <issuer>/.well-known/openid-configuration, fetched from its jwks_uri,
// refreshed in the background and, rate limited, when a token names an
// unknown key id. It implements oidc.KeySet; the zero value is not usable.
type keySet struct {
	issuer string
	algs   []jose.SignatureAlgorithm
	client *http.Client
	log    *slog.Logger
	now    func() time.Time
	// base bounds every fetch. A fetch is shared by whoever waits for it,
	// so one caller's cancelled request must not abort it; Close does.
	base context.Context

	unknownKid *rate.Limiter
	flight     singleflight.Group

	mu      sync.RWMutex
	jwksURL string // from discovery; empty until it succeeds
	keys    []jose.JSONWebKey
	loaded  bool          // a JWKS was fetched at least once
	gen     uint64        // bumped whenever a trusted key is removed
	maxAge  time.Duration // the last JWKS's Cache-Control max-age; 0: none
	// starts counts fetches begun; lastGood is the start number of the
	// newest fetch that succeeded. unknown maps a key id not in the set
	// to starts when it was first seen: once lastGood is beyond that, a
	// fetch begun after the id appeared did not have it, so it is
	// refused outright (a negative cache, bounded by maxUnknownKids).
	starts, lastGood uint64
	unknown          map[string]uint64
}

var _ oidc.KeySet = (*keySet)(nil)

func newKeySet(ctx context.Context, issuer string, algs []jose.SignatureAlgorithm, opts OIDCOptions) *keySet {
	return &keySet{
		issuer:     issuer,
		algs:       algs,
		client:     opts.Client,
		log:        opts.Log.With("issuer", issuer),
		now:        opts.Now,
		base:       ctx,
		unknownKid: rate.NewLimiter(rate.Every(unknownKidRefetchEvery), 1),
		unknown:    map[string]uint64{},
	}
}

// parsedJWSKey carries the JWS the verifier already parsed to the key set,
// so the token is not parsed once more for the signature check.
type parsedJWSKey struct{}

type parsedJWS struct {
	raw string
	jws *jose.JSONWebSignature
}

// VerifySignature checks the token's signature with the trusted key its
// kid names (or, without a kid, with any trusted key) and returns the
// verified payload. Keys a token carries itself (jwk, jku, x5c, x5u) are
// never used: only keys fetched from the issuer are trusted.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := k.parse(ctx, raw)
	if err != nil {
		return nil, err
	}
	h := jws.Signatures[0].Protected
	keys, err := k.keysFor(ctx, h.KeyID, h.Algorithm)
	if err != nil {
		return nil, err
	}
	// With a kid, only that key: a token signed by another key but naming
	// a trusted kid must fail, not find some other key that matches.
	for _, key := range keys {
		if payload, err := jws.Verify(key.Key); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("signature does not verify with the trusted key")
}

func (k *keySet) parse(ctx context.Context, raw string) (*jose.JSONWebSignature, error) {
	jws := (*jose.JSONWebSignature)(nil)
	if p, ok := ctx.Value(parsedJWSKey{}).(*parsedJWS); ok && p.raw == raw {
		jws = p.jws
	} else {
		var err error
		if jws, err = jose.ParseSignedCompact(raw, k.algs); err != nil {
			return nil, fmt.Errorf("malformed jws: %w", err)
		}
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("jws must have exactly one signature")
	}
	// go-oidc checks the algorithm too; the key set does not rely on it.
	if !slices.Contains(k.algs, jose.SignatureAlgorithm(jws.Signatures[0].Protected.Algorithm)) {
		return nil, fmt.Errorf("algorithm %.16q not allowed for this issuer", jws.Signatures[0].Protected.Algorithm)
	}
	return jws, nil
}

// candidates returns the trusted keys a token with this kid and alg may be
// verified with. known is false only for a kid the set does not hold,
// which is what may trigger a re-fetch.
func (k *keySet) candidates(kid, alg string) (keys []jose.JSONWebKey, known bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	known = kid == ""
	for _, key := range k.keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		known = true
		if key.Algorithm == "" || key.Algorithm == alg {
			keys = append(keys, key)
		}
	}
	return keys, known
}

// keysFor returns the trusted keys a token with this kid and alg may be
// verified with, fetching the set again (within the limit) when the kid
// is unknown or no keys were ever fetched. The error is a
// *keysUnavailableError when the token could not be checked yet.
func (k *keySet) keysFor(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	keys, known := k.candidates(kid, alg)
	if known && k.ready() {
		if len(keys) == 0 {
			return nil, fmt.Errorf("no trusted key for alg %.16q and key id %.64q", alg, kid)
		}
		return keys, nil
	}
	if len(kid) > maxKidBytes {
		return nil, fmt.Errorf("key id of %d bytes not in the issuer's key set", len(kid))
	}
	if k.checkedAbsent(kid) {
		// A fetch begun after this kid first appeared did not have it:
		// refused without spending the re-fetch budget.
		return nil, fmt.Errorf("key id %.64q not in the issuer's key set", kid)
	}
	err := k.refetchForUnknownKid(ctx)
	if keys, known = k.candidates(kid, alg); known && k.ready() {
		if len(keys) == 0 {
			return nil, fmt.Errorf("no trusted key for alg %.16q and key id %.64q", alg, kid)
		}
		return keys, nil
	}
	switch {
	case !k.ready():
		// Cold start: fail closed, but as "not yet", not "bad token".
		return nil, &keysUnavailableError{reason: "issuer's signing keys not fetched yet", retryAfter: noKeysRetryAfter}
	case k.checkedAbsent(kid):
		return nil, fmt.Errorf("key id %.64q not in the issuer's key set", kid)
	}
	// Nothing fetched since this kid appeared (the limit was spent, by a
	// flood of random kids perhaps, or the IdP failed): it may be a key
	// rotated in a moment ago, so the client is asked to retry once the
	// next re-fetch is allowed, never told its token is invalid.
	return nil, &keysUnavailableError{
		reason:     fmt.Sprintf("key id %.64q not in the issuer's key set yet: %v", kid, err),
		retryAfter: k.refetchWait(),
	}
}

// checkedAbsent reports whether a fetch begun after kid was first seen
// succeeded without it, and remembers kid as first seen now if it is new.
// When the memory is full, ids already checked are forgotten (they are
// then simply looked for again); if it is still full, kid is not
// remembered, and is answered "not yet" until there is room.
func (k *keySet) checkedAbsent(kid string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if first, seen := k.unknown[kid]; seen {
		return k.lastGood > first
	}
	if len(k.unknown) >= maxUnknownKids {
		for id, first := range k.unknown {
			if k.lastGood > first {
				delete(k.unknown, id)
			}
		}
	}
	if len(k.unknown) < maxUnknownKids {
		k.unknown[kid] = k.starts
	}
	return false
}

// refetchWait is how long until the unknown-kid limit allows a re-fetch,
// at least a second.
func (k *keySet) refetchWait() time.Duration {
	missing := 1 - k.unknownKid.TokensAt(k.now())
	return max(time.Second, time.Duration(missing*float64(unknownKidRefetchEvery)))
}

// refetchForUnknownKid re-fetches the key set for a token signed by a key
// the set does not hold yet (the issuer rotated), at most once per
// unknownKidRefetchEvery. Concurrent callers share one decision and one
// fetch, so N random-kid tokens cannot make N requests to the IdP.
func (k *keySet) refetchForUnknownKid(ctx context.Context) error {
	ch := k.flight.DoChan("unknown-kid", func() (any, error) {
		if !k.unknownKid.AllowN(k.now(), 1) {
			return nil, errRefetchLimited
		}
		return nil, k.refresh(k.base, false)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refresh fetches the key set now (discovering the jwks_uri first if that
// has not succeeded yet). A fetch already under way is joined unless fresh
// is set, in which case the fetch starts after the call.
func (k *keySet) refresh(ctx context.Context, fresh bool) error {
	if fresh {
		k.flight.Forget("load")
	}
	ch := k.flight.DoChan("load", func() (any, error) { return nil, k.load(k.base) })
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// load runs discovery if needed, then fetches and installs the key set.
// On any error the keys held so far stay trusted: an IdP outage must not
// lock every user out, while a removed key is dropped at the next fetch
// that succeeds.
func (k *keySet) load(ctx context.Context) error {
	k.mu.Lock()
	jwksURL := k.jwksURL
	k.starts++
	start := k.starts
	k.mu.Unlock()
	if jwksURL == "" {
		u, err := k.discover(ctx)
		if err != nil {
			return err
		}
		k.mu.Lock()
		k.jwksURL, jwksURL = u, u
		k.mu.Unlock()
	}
	body, maxAge, err := k.get(ctx, jwksURL)
	if err != nil {
		return fmt.Errorf("fetch jwks: %w", err)
	}
	keys, skipped := parseJWKS(body)
	if keys == nil {
		return fmt.Errorf("jwks %s: %w", jwksURL, skipped)
	}
	if skipped != nil {
		k.log.Warn("jwks: keys skipped", "jwks_uri", jwksURL, "err", skipped)
	}
	k.install(keys)
	k.mu.Lock()
	k.lastGood, k.maxAge = max(k.lastGood, start), maxAge
	k.mu.Unlock()
	return nil
}

// discover reads the issuer's OpenID Provider metadata.
func (k *keySet) discover(ctx context.Context) (string, error) {
	wellKnown := strings.TrimSuffix(k.issuer, "/") + "/.well-known/openid-configuration"
	body, _, err := k.get(ctx, wellKnown)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery %s: %w", wellKnown, err)
	}
	// OpenID Connect Discovery 1.0 section 4.3: the issuer must match
	// exactly, or another issuer's metadata (and keys) could be served.
	if doc.Issuer != k.issuer {
		return "", fmt.Errorf("discovery %s: issuer %.200q does not match the configured issuer", wellKnown, doc.Issuer)
	}
	u, err := url.Parse(doc.JWKSURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("discovery %s: jwks_uri %.200q is not an absolute http(s) URL", wellKnown, doc.JWKSURI)
	}
	// Keys fetched in clear text could be swapped on the way; http is only
	// as acceptable as the (loopback) http issuer itself.
	if u.Scheme == "http" && !strings.HasPrefix(k.issuer, "http://") {
		return "", fmt.Errorf("discovery %s: jwks_uri must use https", wellKnown)
	}
	return doc.JWKSURI, nil
}

// get fetches u and returns its body and Cache-Control max-age (0: none).
func (k *keySet) get(ctx context.Context, u string) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: status %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxMetadataBytes {
		return nil, 0, fmt.Errorf("GET %s: body larger than %d bytes", u, maxMetadataBytes)
	}
	return body, maxAge(resp.Header.Values("Cache-Control")), nil
}

// maxAge is the max-age of Cache-Control values (RFC 9111 section 5.2.2.1),
// 0 when there is none or it does not parse (no-store and no-cache carry
// none: the configured interval applies).
func maxAge(values []string) time.Duration {
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			if !strings.EqualFold(name, "max-age") {
				continue
			}
			secs, err := strconv.ParseInt(strings.Trim(arg, `"`), 10, 64)
			if err != nil || secs < 0 || secs > int64(24*time.Hour/time.Second) {
				return 0
			}
			if secs == 0 {
				return minJWKSMaxAge // "stale at once": as often as the floor allows
			}
			return time.Duration(secs) * time.Second
		}
	}
	return 0
}

// refreshAfter is the wait before the next background fetch: the
// configured interval, or the JWKS's max-age when the IdP asks for a
// shorter one, but never below minJWKSMaxAge (nor above the interval).
func refreshAfter(interval, maxAge time.Duration) time.Duration {
	if maxAge <= 0 || maxAge >= interval {
		return interval
	}
	return min(interval, max(maxAge, minJWKSMaxAge))
}

// parseJWKS parses a JWK Set (RFC 7517 section 5) with go-jose, one key at
// a time, so one key the gateway cannot use does not discard the others.
// It returns the usable public signing keys, non-nil (possibly empty) when
// the document is a key set; and why keys were skipped. An empty "keys"
// array is a valid set: the issuer trusts no key, and neither will the
// gateway. A set whose every key is unusable is an error.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New(`not a JWK set: no "keys" array`)
	}
	keys := []jose.JSONWebKey{}
	var skipped []error
	for i, raw := range set.Keys {
		var key jose.JSONWebKey
		err := key.UnmarshalJSON(raw)
		if err == nil {
			key, err = usableKey(key)
		}
		if err != nil {
			skipped = append(skipped, fmt.Errorf("keys[%d] (kid %.64q): %w", i, key.KeyID, err))
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 && len(set.Keys) > 0 {
		return nil, errors.Join(skipped...)
	}
	return keys, errors.Join(skipped...)
}

// usableKey returns the public half of an asymmetric signing key.
func usableKey(key jose.JSONWebKey) (jose.JSONWebKey, error) {
	if key.Use != "" && key.Use != "sig" {
		return key, fmt.Errorf("use %.16q is not sig", key.Use)
	}
	if _, ok := key.Key.([]byte); ok {
		// A symmetric key in a published set is a published secret: anyone
		// could sign with it (and HS* with a public key is the classic
		// algorithm-confusion attack).
		return key, errors.New("symmetric keys are never trusted")
	}
	pub := key.Public()
	if !pub.IsPublic() || !pub.Valid() {
		return key, errors.New("not a valid asymmetric key")
	}
	if r, ok := pub.Key.(*rsa.PublicKey); ok && r.N.BitLen() < minRSABits {
		return key, fmt.Errorf("RSA key of %d bits, at least %d required", r.N.BitLen(), minRSABits)
	}
	return pub, nil
}

// install replaces the trusted keys. When a key that was trusted is gone,
// the generation changes so that tokens cached as verified by it are
// verified again (and refused).
func (k *keySet) install(keys []jose.JSONWebKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	next := make(map[string]bool, len(keys))
	for _, key := range keys {
		next[keyIdentity(key)] = true
	}
	removed := 0
	for _, key := range k.keys {
		if !next[keyIdentity(key)] {
			removed++
		}
	}
	if removed > 0 {
		k.gen++
	}
	if !k.loaded || removed > 0 || len(keys) != len(k.keys) {
		k.log.Info("jwks: key set changed", "keys", len(keys), "removed", removed)
	}
	k.keys, k.loaded = keys, true
}

// keyIdentity is a key's kid, alg and RFC 7638 thumbprint: the same key
// published under another kid or alg is a different trusted key.
func keyIdentity(key jose.JSONWebKey) string {
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "kid:" + key.KeyID
	}
	return key.KeyID + "\x00" + key.Algorithm + "\x00" + string(tp)
}

// nextRefresh is refreshAfter for the last JWKS fetched.
func (k *keySet) nextRefresh(interval time.Duration) time.Duration {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return refreshAfter(interval, k.maxAge)
}

// ready reports whether the set holds a key a token could be verified with.
func (k *keySet) ready() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.loaded && len(k.keys) > 0
}

// generation identifies the set of trusted keys; it changes when a key is
// removed.
func (k *keySet) generation() uint64 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.gen
}

// run loads the key set at once and then every interval until ctx is
// done. A failed load is retried with capped exponential backoff (with
// jitter, so replicas do not retry in step); the keys held so far stay
// trusted meanwhile.
func (k *keySet) run(ctx context.Context, interval, minRetry, maxRetry time.Duration) {
	retry := minRetry
	for {
		var wait time.Duration
		if err := k.refresh(ctx, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = retry/2 + rand.N(retry/2+1)
			retry = min(retry*2, maxRetry, interval)
			k.log.Warn("oidc: fetching signing keys failed; retrying", "err", err, "retry_in", wait, "have_keys", k.ready())
		} else {
			retry, wait = minRetry, k.nextRefresh(interval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
