package config

// The ways the gateway reaches an upstream MCP server (upstreams[].transport).
const (
	// TransportStreamableHTTP is MCP's Streamable HTTP transport: POST and
	// GET on upstreams[].url. The default.
	TransportStreamableHTTP = "streamable-http"
	// TransportSSE is the HTTP+SSE transport of protocol 2024-11-05: a GET
	// stream on upstreams[].url announces the endpoint messages are POSTed to.
	TransportSSE = "sse"
	// TransportStdio runs upstreams[].command and speaks MCP over its
	// standard input and output.
	TransportStdio = "stdio"
)

// upstreamTransport checks upstreams[].transport names a transport the
// gateway implements.
func (v *validator) upstreamTransport(path string, up Upstream) {
	switch up.Transport {
	case TransportStreamableHTTP:
	case TransportSSE:
	case TransportStdio:
		v.stdio(path, up)
		return
	default:
		v.add(path+".transport", "must be %s, %s or %s", TransportStreamableHTTP, TransportSSE, TransportStdio)
	}
	v.notStdio(path, up)
}
