package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/mcpwire"
)

// startSourcedGateway serves a gateway with a response cache (which
// POST /admin/invalidate needs) from yaml plus a cache block, and returns
// its public and admin URLs.
func startSourcedGateway(t *testing.T, yaml string, opts gateway.Options) (public, admin string) {
	t.Helper()
	gw, err := newGatewayYAML(t, yaml+"cache: {max_mb: 4}\n", func(cfg *config.Config) (err error) {
		if opts.Cache, err = cache.New(cfg, cache.Options{}); err == nil {
			t.Cleanup(func() { opts.Cache.Close() })
		}
		return err
	}, &opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	adm := httptest.NewServer(gw.AdminHandler())
	t.Cleanup(adm.Close)
	return srv.URL, adm.URL
}

// sourceEvent is a context source's POST /admin/invalidate.
func sourceEvent(t *testing.T, admin, body string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, admin+"/admin/invalidate", strings.NewReader(body))
	req.Header.Set("X-Ctxgate-Admin", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /admin/invalidate %s: %s", body, resp.Status)
	}
}

// openListen opens a modern subscriptions/listen (id 7) for uris and
// reads its acknowledgement; next reads the following messages.
func openListen(t *testing.T, url string, uris ...string) (next func() updateMessage) {
	t.Helper()
	// Bounds only a failing run: the updates arrive at once.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	list, _ := json.Marshal(uris)
	body := modernCall("subscriptions/listen", fmt.Sprintf(`"notifications":{"resourceSubscriptions":%s}`, list))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header = modernHeader("Content-Type", "application/json", "Accept", "application/json, text/event-stream",
		"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("listen: %s", resp.Status)
	}
	events := mcpwire.NewReader(resp.Body)
	next = func() updateMessage {
		t.Helper()
		return nextMessage[updateMessage](t, events, "the listen stream")
	}
	if ack := next(); ack.Method != "notifications/subscriptions/acknowledged" {
		t.Fatalf("listen's first message %q, want its acknowledgement", ack.Method)
	}
	return next
}

// nextMessage reads the next event with data from events as a T (the
// keep-alives and id-only events skipped); what names the stream.
func nextMessage[T any](t *testing.T, events *mcpwire.Reader, what string) (m T) {
	t.Helper()
	for {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("reading %s: %v", what, err)
		}
		if ev.HasData && len(ev.Data) > 0 {
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				t.Fatalf("%s: event data %q: %v", what, ev.Data, err)
			}
			return m
		}
	}
}

// updateMessage is what the tests read of a resources/updated.
type updateMessage struct {
	Method string `json:"method"`
	Params struct {
		URI  string         `json:"uri"`
		Meta map[string]any `json:"_meta"`
	} `json:"params"`
}

// A context source's resource event reaches every kind of stream that
// subscribed to the resource, and none that did not: a modern listen on a
// single route, a legacy session's merged stream on a federated route and
// a federated listen, each with the URI as the client knows it, a listen's
// carrying its subscriptionId, each decided by the policy. Each case sends
// the events that must not arrive first: the first update read must be
// the one that must.
func TestResourceEventReachesStreams(t *testing.T) {
	t.Run("modern listen on a single route", func(t *testing.T) {
		a := newListenMember(t, "a")
		url, admin := startSourcedGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams: [{name: a, url: %q}]
`, a.srv.URL), gateway.Options{})
		next := openListen(t, url+"/mcp/a", "res://a/doc")
		sourceEvent(t, admin, `{"upstream":"a","uri":"res://a/other"}`)
		sourceEvent(t, admin, `{"upstream":"a","uri_prefix":"res://a/"}`)
		m := next()
		if m.Method != "notifications/resources/updated" || m.Params.URI != "res://a/doc" || m.Params.Meta["io.modelcontextprotocol/subscriptionId"] != float64(7) {
			t.Errorf("listen got %+v, want resources/updated res://a/doc with subscriptionId 7", m)
		}
	})

	t.Run("legacy session on a federated route", func(t *testing.T) {
		a, b := newStreamMember(t, "a"), newStreamMember(t, "b")
		url, admin := startSourcedGateway(t, streamGatewayYAML(a, b), gateway.Options{Policy: newEngine(t, streamPolicy, nil, nil)})
		url += "/mcp"
		init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
		if init.status != http.StatusOK || init.session == "" {
			t.Fatalf("initialize: HTTP %d", init.status)
		}
		stream := openFedStream(t, url, init.session, "")
		subscribe(t, url, init.session, "b+res://b/doc", "b+res://b/secret")
		sourceEvent(t, admin, `{"upstream":"a","uri":"res://a/doc"}`)    // not subscribed to
		sourceEvent(t, admin, `{"upstream":"b","uri":"res://b/secret"}`) // hidden by the policy
		sourceEvent(t, admin, `{"upstream":"b","uri":"res://b/doc"}`)
		if m := stream.next(t); m.Method != "notifications/resources/updated" || m.Params.URI != "b+res://b/doc" {
			t.Errorf("federated stream got %s %q, want resources/updated b+res://b/doc", m.Method, m.Params.URI)
		}
	})
	t.Run("federated listen", func(t *testing.T) {
		a, b := newListenMember(t, "a"), newListenMember(t, "b")
		url, admin := startSourcedGateway(t, streamGatewayYAML(a, b), gateway.Options{Policy: newEngine(t, streamPolicy, nil, nil)})
		next := openListen(t, url+"/mcp", "b+res://b/doc", "b+res://b/secret")
		sourceEvent(t, admin, `{"upstream":"a","uri":"res://a/doc"}`)
		sourceEvent(t, admin, `{"upstream":"b","uri":"res://b/secret"}`)
		sourceEvent(t, admin, `{"upstream":"b","uri":"res://b/doc"}`)
		m := next()
		if m.Method != "notifications/resources/updated" || m.Params.URI != "b+res://b/doc" || m.Params.Meta["io.modelcontextprotocol/subscriptionId"] != float64(7) {
			t.Errorf("federated listen got %+v, want resources/updated b+res://b/doc with subscriptionId 7", m)
		}
	})
}
