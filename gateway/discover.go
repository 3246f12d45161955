package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// Which era an upstream speaks is learned, not configured: on the first
// modern request for a route the gateway asks the upstream server/discover
// (SEP-2575). Its supportedVersions, or the supported list of a -32022
// refusal, is what the upstream serves; any other answer (a legacy server's
// 400 or 404, say) means legacy only, the revisions that initialize
// negotiates. The answer is kept for upstreamEraTTL, so an upstream that is
// upgraded is noticed; a probe that could not reach the upstream is not kept,
// and is retried after upstreamProbeRetry (meanwhile the gateway's whole list
// is assumed and requests are forwarded for the upstream to answer).
//
// Unless the upstream is configured to be bridged (bridge.go), a modern
// request for a legacy-only upstream gets UnsupportedProtocolVersionError
// listing the legacy revisions the route serves, exactly what a legacy-only
// server answers, so a modern client falls back to initialize and the
// gateway's legacy session.

const (
	upstreamEraTTL     = 5 * time.Minute
	upstreamProbeRetry = 5 * time.Second // after a failed probe, requests do not wait for another
	upstreamProbeLimit = 1 << 20
	probeTimeout       = 10 * time.Second
)

// upstreamEra is what the gateway knows of one upstream's revisions.
type upstreamEra struct {
	mu       sync.Mutex
	versions []string // the revisions the upstream serves that the gateway relays
	learned  time.Time
	failed   time.Time // the last probe that could not reach the upstream
}

// routeVersions returns the revisions a route serves: the gateway's own
// (legacy and modern) that its upstream serves too, newest first. While the
// upstream cannot be asked, the gateway's whole list.
func (s *Server) routeVersions(r *http.Request, rt *route) []string {
	e := rt.era
	if e == nil {
		return gatewayVersions()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.versions != nil && time.Since(e.learned) < upstreamEraTTL {
		return e.versions
	}
	if time.Since(e.failed) < upstreamProbeRetry {
		return gatewayVersions()
	}
	upstreamVersions, err := s.probeUpstream(r.Context(), rt)
	if err != nil {
		e.failed = time.Now()
		loggerOf(r.Context(), s.log).Warn("could not learn the upstream's protocol revisions", "upstream", rt.upstream.Name, "error", err)
		return gatewayVersions()
	}
	e.versions = slices.DeleteFunc(gatewayVersions(), func(v string) bool { return !slices.Contains(upstreamVersions, v) })
	e.learned = time.Now()
	return e.versions
}

// gatewayVersions is every revision the gateway relays, newest first.
func gatewayVersions() []string {
	out := slices.Clone(modernVersions)
	for _, v := range slices.Backward(supportedVersions) {
		out = append(out, v)
	}
	return out
}

// probeUpstream sends server/discover and reads the revisions the upstream
// serves from the answer.
func (s *Server) probeUpstream(ctx context.Context, rt *route) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":"ctxgate-discover","method":"server/discover","params":{"_meta":{` +
		`"` + metaProtocolVersion + `":"` + modernVersions[0] + `","` + metaClientCapabilities + `":{},` +
		`"io.modelcontextprotocol/clientInfo":{"name":"ctxgate","version":"probe"}}}}`
	// direct: a failed probe is remembered and not repeated for
	// upstreamProbeRetry; it must neither be refused by the breaker the
	// clients' requests open nor count towards opening it.
	resp, raw, err := askAndRead(ctx, rt.direct(), upstreamRequest{body: []byte(body), version: modernVersions[0],
		header: http.Header{"Mcp-Method": {"server/discover"}}}, upstreamProbeLimit)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnauthorized {
		return nil, errUpstreamProbe(resp.Status)
	}
	return discoveredVersions(raw, isEventStream(resp.Header)), nil
}

type errUpstreamProbe string

func (e errUpstreamProbe) Error() string { return "server/discover probe answered " + string(e) }

// discoveredVersions reads an answer to server/discover: the result's
// supportedVersions, a -32022 error's data.supported, or else (no modern
// answer at all) the legacy revisions.
func discoveredVersions(body []byte, sse bool) []string {
	for _, p := range messagePayloads(body, sse) {
		var msg struct {
			Result *struct {
				SupportedVersions []string `json:"supportedVersions"`
			} `json:"result"`
			Error *struct {
				Code int64 `json:"code"`
				Data struct {
					Supported []string `json:"supported"`
				} `json:"data"`
			} `json:"error"`
		}
		if json.Unmarshal(p, &msg) != nil {
			continue
		}
		switch {
		case msg.Result != nil && len(msg.Result.SupportedVersions) > 0:
			return msg.Result.SupportedVersions
		case msg.Error != nil && msg.Error.Code == CodeUnsupportedProtocolVersion && len(msg.Error.Data.Supported) > 0:
			return msg.Error.Data.Supported
		}
	}
	return slices.Clone(supportedVersions)
}

// filterDiscover rewrites a server/discover result so the gateway describes
// itself: supportedVersions keeps only the revisions this route relays
// (the gateway cannot serve a revision just because its upstream can). Every
// other member, _meta included, keeps its exact bytes.
func (s *Server) filterDiscover(rt *route, result []byte) []byte {
	ms, err := members(result)
	if err != nil {
		return result
	}
	served := gatewayVersions()
	for i, m := range ms {
		if m.name != "supportedVersions" {
			continue
		}
		var vs []string
		if json.Unmarshal(m.value, &vs) != nil {
			return result
		}
		kept := slices.DeleteFunc(vs, func(v string) bool { return !slices.Contains(served, v) })
		value, err := json.Marshal(kept)
		if err != nil {
			return result
		}
		ms[i].value = jsontext.Value(value)
		if len(kept) == 0 {
			s.log.Warn("upstream's server/discover lists no revision the gateway relays", "upstream", rt.upstream.Name)
		}
		return encodeObject(ms)
	}
	return result
}
