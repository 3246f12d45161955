package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Tracing configures OpenTelemetry traces, exported over OTLP/HTTP. Off by
// default.
type Tracing struct {
	// Enabled turns span recording and export on. When off, the gateway
	// still passes a valid incoming W3C trace context on to upstreams.
	Enabled bool `yaml:"enabled"`
	// Endpoint is the OTLP/HTTP traces URL of a collector, e.g.
	// https://otel-collector.example.com:4318/v1/traces. Required when
	// Enabled.
	Endpoint string `yaml:"endpoint"`
	// SampleRatio is the share of new traces recorded, 0 to 1. A request
	// that arrives with a sampled traceparent is always recorded (the
	// caller already decided). Nil means DefaultSampleRatio.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// Insecure allows an http:// Endpoint, which sends spans (route and
	// tool names, resource URIs, request ids) unencrypted.
	Insecure bool `yaml:"insecure"`
}

// DefaultSampleRatio records every new trace, as the OpenTelemetry SDK's
// default sampler does.
const DefaultSampleRatio = 1.0

func (t *Tracing) applyDefaults() {
	if t.SampleRatio == nil {
		r := DefaultSampleRatio
		t.SampleRatio = &r
	}
}

func (v *validator) admin(a *Admin, serverListen string) {
	v.listen("admin.listen", a.Listen)
	if a.Listen == serverListen && !strings.HasSuffix(a.Listen, ":0") {
		v.add("admin.listen", "must differ from server.listen; pick another port")
	}
	for i, h := range a.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ @") {
			v.add(fmt.Sprintf("admin.allowed_hosts[%d]", i), "must be a host or host:port, e.g. ctxgate-admin.monitoring.svc")
		}
	}
	if a.TokenSHA256 != "" {
		if b, err := hex.DecodeString(a.TokenSHA256); err != nil || len(b) != 32 {
			v.add("admin.token_sha256", "must be 64 hex digits; compute it with: printf %%s \"$TOKEN\" | ctxgate hash-key")
		}
		return
	}
	// Fail closed: metrics, upstream status and profiles reachable from
	// the network need a credential of their own.
	if host, _, err := net.SplitHostPort(a.Listen); err == nil && !isLoopback(host) {
		v.add("admin.token_sha256", "required when admin.listen is not a loopback address: set the hex SHA-256 of an admin bearer token (printf %%s \"$TOKEN\" | ctxgate hash-key), or listen on 127.0.0.1")
	}
}

func (v *validator) tracing(t *Tracing) {
	if t.SampleRatio != nil && (*t.SampleRatio < 0 || *t.SampleRatio > 1) {
		v.add("tracing.sample_ratio", "must be between 0 and 1, e.g. 0.1 to record one new trace in ten")
	}
	if t.Endpoint == "" {
		if t.Enabled {
			v.add("tracing.endpoint", "is required when tracing is enabled: the OTLP/HTTP traces URL, e.g. https://otel-collector:4318/v1/traces")
		}
		return
	}
	u, err := url.Parse(t.Endpoint)
	switch {
	case err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https"):
		v.add("tracing.endpoint", "must be an absolute http or https URL, e.g. https://otel-collector:4318/v1/traces")
	case u.User != nil:
		v.add("tracing.endpoint", "must not carry credentials")
	case u.Scheme == "http" && !t.Insecure:
		v.add("tracing.endpoint", "is plain http: use https, or set tracing.insecure: true to send spans unencrypted")
	}
}
