package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ctxgate/ctxgate/upstream"
)

// Probe is what one reachability check of an upstream found.
type Probe struct {
	// Reachable: the upstream answered initialize with a result.
	Reachable bool `json:"reachable"`
	// Detail says what answered (server name, version, protocol), or why
	// the upstream counts as unreachable.
	Detail string `json:"detail"`
	// At is when the probe ended; Took how long it took.
	At   time.Time     `json:"at"`
	Took time.Duration `json:"took_ns"`
}

// ProbeUserAgent is the User-Agent of ProbeUpstream's requests.
const ProbeUserAgent = "ctxgate-health-probe"

// probeBody is the initialize a probe sends: the gateway introduces
// itself, so an upstream's own log shows who asked.
var probeBody = []byte(`{"jsonrpc":"2.0","id":"ctxgate-probe","method":"initialize","params":{"protocolVersion":"` +
	supportedVersions[len(supportedVersions)-1] + `","capabilities":{},"clientInfo":{"name":"ctxgate-probe","version":"1"}}}`)

// ProbeUpstream asks up whether it serves MCP: an initialize, whose session
// (if the upstream opened one) is deleted again. It goes through
// up.Transport, the single-attempt transport with the gateway's own
// credentials, deliberately bypassing the executor: a health check must
// neither be refused by an open circuit breaker nor count towards opening
// it, and must not be retried into a slow answer. now is the clock.
func ProbeUpstream(ctx context.Context, up *upstream.Upstream, timeout time.Duration, now func() time.Time) Probe {
	start := now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p := Probe{}
	p.Reachable, p.Detail = probeInitialize(ctx, up)
	p.At = now()
	p.Took = p.At.Sub(start)
	return p
}

func probeInitialize(ctx context.Context, up *upstream.Upstream) (bool, string) {
	resp, err := probeSend(ctx, up, http.MethodPost, "", probeBody)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Sprintf("HTTP %d, reading the answer: %v", resp.StatusCode, err)
	}
	if session := resp.Header.Get("Mcp-Session-Id"); session != "" {
		// The probe's session is of no further use: end it, so probes do
		// not pile up sessions on the upstream.
		if d, err := probeSend(ctx, up, http.MethodDelete, session, nil); err == nil {
			d.Body.Close()
		}
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("HTTP %d to initialize", resp.StatusCode)
	}
	var msg struct {
		Result *struct {
			ProtocolVersion string `json:"protocolVersion"`
			ServerInfo      struct {
				Name, Version string
			} `json:"serverInfo"`
		} `json:"result"`
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	// The gateway's own SSE reader: the first event with a message.
	payloads := messagePayloads(raw, isEventStream(resp.Header))
	if len(payloads) == 0 {
		return false, "HTTP 200, but no message in the answer"
	}
	if err := json.Unmarshal(payloads[0], &msg); err != nil {
		return false, fmt.Sprintf("HTTP 200, but not a JSON-RPC answer: %v", err)
	}
	switch {
	case msg.Result != nil:
		return true, fmt.Sprintf("%s %s, protocol %s", cmpOr(msg.Result.ServerInfo.Name, "(unnamed server)"), msg.Result.ServerInfo.Version, msg.Result.ProtocolVersion)
	case msg.Error != nil:
		// An MCP server that refuses this initialize (e.g. a modern-only
		// one) still answers MCP: it is up.
		return true, fmt.Sprintf("answers MCP (initialize: error %d %s)", msg.Error.Code, msg.Error.Message)
	}
	return false, "HTTP 200, but neither a result nor an error"
}

func probeSend(ctx context.Context, up *upstream.Upstream, method, session string, body []byte) (*http.Response, error) {
	// direct: see ProbeUpstream. Named by its User-Agent, so an upstream's
	// logs (and test recorders) can tell the gateway's probes from its
	// clients' requests.
	return askUpstream(ctx, up.Direct(), upstreamRequest{method: method, session: session, body: body,
		header: http.Header{"User-Agent": {ProbeUserAgent}}})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
