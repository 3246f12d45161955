// Package upstream holds the named MCP servers behind the gateway, the
// HTTP transport used to reach each of them, and each one's failsafe-go
// executor (Resilience): per-attempt timeout and overall deadline, retries
// with jittered backoff and a budget, a circuit breaker and a bulkhead.
// Failures come back as *Failure, classified for errors.Is.
//
// The transport is tuned for a proxy: many idle connections per host (Go's
// default of 2 makes a busy proxy dial for nearly every request), HTTP/2
// when a TLS upstream offers it, no transparent compression (it would
// buffer event streams), no environment proxy, and no redirects (the
// reverse proxy never follows them, so a 3xx cannot become an SSRF).
package upstream

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/ctxgate/ctxgate/config"
)

// Upstream is one configured MCP server.
type Upstream struct {
	// Name is the configured name; the route is /mcp/<Name>.
	Name string
	// URL is the upstream's Streamable HTTP endpoint.
	URL *url.URL
	// Transport carries every request to this upstream: one attempt each.
	Transport http.RoundTripper
	// Resilience is the upstream's executor (timeouts, retries, circuit
	// breaker, bulkhead); wrap the attempt transport with its RoundTripper.
	Resilience *Resilience

	// Stdio runs the processes of a stdio upstream (its Transport is
	// RoundTripper(Stdio)); nil for every other transport.
	Stdio *Stdio
	// SSE holds the sessions of an HTTP+SSE (2024-11-05) upstream (its
	// Transport is RoundTripper(SSE) under the credentials); nil for
	// every other transport.
	SSE *SSE

	// Connector runs the connect-your-account flow of a user_oauth
	// upstream; nil for every other kind.
	Connector *Connector

	// user, when set, calls the upstream as the caller (token_exchange,
	// user_oauth); see Prepare.
	user userCredential
}

// Pool is the set of upstreams, by name.
type Pool struct {
	list   []*Upstream
	byName map[string]*Upstream
}

// NewPool builds one Upstream per config entry. The config must have been
// validated; NewPool still returns an error rather than panic on a bad URL.
// A user_oauth upstream needs NewPoolFor, which opens the grant store.
func NewPool(cfgs []config.Upstream) (*Pool, error) {
	return newPool(cfgs, nil)
}

// NewPoolFor builds the upstreams of cfg, with the grant store of its
// user_oauth upstreams (cfg.Grants) when it has one.
func NewPoolFor(cfg *config.Config) (*Pool, error) {
	var store *GrantStore
	if cfg.Grants != nil {
		var err error
		if store, err = NewGrantStore(cfg.Grants); err != nil {
			return nil, err
		}
	}
	return newPool(cfg.Upstreams, store)
}

func newPool(cfgs []config.Upstream, grants *GrantStore) (*Pool, error) {
	p := &Pool{byName: make(map[string]*Upstream, len(cfgs))}
	for i, c := range cfgs {
		if c.Transport == config.TransportStdio {
			// A process, not a host: no TLS, no credentials (it holds its
			// own, in env). The URL only names it in the proxy's request.
			st := NewStdio(c)
			if err := st.CanRun(); err != nil {
				return nil, fmt.Errorf("upstreams[%d].%w", i, err)
			}
			up := &Upstream{Name: c.Name, URL: &url.URL{Scheme: "stdio", Host: c.Name, Path: "/"},
				Transport: RoundTripper(st), Resilience: newResilience(c), Stdio: st}
			p.list = append(p.list, up)
			p.byName[c.Name] = up
			continue
		}
		u, err := url.Parse(c.URL)
		if err != nil {
			return nil, fmt.Errorf("upstreams[%d].url: %w", i, err)
		}
		base := newTransport(c)
		if c.TLS != nil {
			if base.TLSClientConfig, err = newTLSConfig(c.TLS); err != nil {
				return nil, fmt.Errorf("upstreams[%d].%w", i, err)
			}
		}
		transport, user, err := withCredentials(base, c.Name, c.Credentials, grants)
		if err != nil {
			return nil, fmt.Errorf("upstreams[%d].%w", i, err)
		}
		var sse *SSE
		if c.Transport == config.TransportSSE {
			// Under the executor and the reverse proxy like any attempt
			// transport, so every stage of the gateway applies unchanged.
			sse = NewSSE(u, transport)
			transport = RoundTripper(sse)
		}
		up := &Upstream{Name: c.Name, URL: u, Transport: transport, Resilience: newResilience(c), user: user, SSE: sse}
		up.Connector, _ = user.(*Connector)
		p.list = append(p.list, up)
		p.byName[c.Name] = up
	}
	return p, nil
}

// All returns the upstreams in configuration order.
func (p *Pool) All() []*Upstream { return p.list }

// Get returns the named upstream, or nil.
func (p *Pool) Get(name string) *Upstream { return p.byName[name] }

// CloseIdleConnections closes every upstream's idle connections; call it
// at shutdown.
func (p *Pool) CloseIdleConnections() {
	for _, up := range p.list {
		switch t := up.Transport.(type) {
		case interface{ CloseIdleConnections() }:
			t.CloseIdleConnections()
		case *oauth2.Transport:
			if c, ok := t.Base.(interface{ CloseIdleConnections() }); ok {
				c.CloseIdleConnections()
			}
		}
	}
}

// Close ends every stdio upstream's processes and every HTTP+SSE
// upstream's streams (the server sees its sessions end, instead of holding
// them until its own timeout); call it at shutdown.
func (p *Pool) Close() {
	for _, up := range p.list {
		if up.Stdio != nil {
			up.Stdio.Close()
		}
		if up.SSE != nil {
			up.SSE.Close()
		}
	}
}

func newTransport(c config.Upstream) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		// No Proxy: an upstream is reached where configured, never through
		// whatever HTTP_PROXY the process environment happens to hold.
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        0, // no global cap; the per-host cap below bounds it
		MaxIdleConnsPerHost: c.MaxIdleConns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		// Transparent gzip would hold back SSE events until a gzip block
		// fills; the gateway relays identity-encoded bodies only.
		DisableCompression: true,
		// No ResponseHeaderTimeout: a tools/call answered as JSON sends its
		// headers only when the tool finishes. Timeouts are per upstream
		// policy, not a transport constant.
	}
}
