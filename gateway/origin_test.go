package gateway

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ctxgate/ctxgate/config"
)

func TestOriginGuard(t *testing.T) {
	loopback := config.Server{Listen: "127.0.0.1:8080", PublicURL: "http://127.0.0.1:8080"}
	public := config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com"}
	tests := []struct {
		name    string
		cfg     config.Server
		host    string
		origins []string // Origin header values, in order
		tls     bool
		wantErr bool // 403 CodeForbidden
	}{
		// Host on a loopback listener.
		{name: "loopback: localhost with port", cfg: loopback, host: "localhost:8080"},
		{name: "loopback: localhost with another port", cfg: loopback, host: "localhost:3000"},
		{name: "loopback: localhost without port", cfg: loopback, host: "localhost"},
		{name: "loopback: LOCALHOST", cfg: loopback, host: "LOCALHOST:8080"},
		{name: "loopback: 127.0.0.1", cfg: loopback, host: "127.0.0.1:8080"},
		{name: "loopback: 127.0.0.1 other port", cfg: loopback, host: "127.0.0.1:1"},
		{name: "loopback: [::1] with port", cfg: loopback, host: "[::1]:8080"},
		{name: "loopback: [::1] without port", cfg: loopback, host: "[::1]"},
		{name: "loopback: evil host", cfg: loopback, host: "evil.example.com", wantErr: true},
		{name: "loopback: evil host with port", cfg: loopback, host: "evil.example.com:8080", wantErr: true},
		{name: "loopback: localhost as a subdomain", cfg: loopback, host: "localhost.evil.example.com:8080", wantErr: true},
		{name: "loopback: empty host", cfg: loopback, host: "", wantErr: true},
		{name: "loopback: private address", cfg: loopback, host: "10.0.0.1:8080", wantErr: true},
		{name: "localhost listener", cfg: config.Server{Listen: "localhost:8080"}, host: "127.0.0.1:8080"},
		{name: "[::1] listener", cfg: config.Server{Listen: "[::1]:8080"}, host: "localhost:8080"},

		// Host on a public listener.
		{name: "public: public_url host", cfg: public, host: "mcp.example.com"},
		{name: "public: public_url host any case with port", cfg: public, host: "MCP.Example.com:443"},
		{name: "public: localhost not accepted", cfg: public, host: "localhost:8080", wantErr: true},
		{name: "public: 127.0.0.1 not accepted", cfg: public, host: "127.0.0.1:8080", wantErr: true},
		{name: "public: other host", cfg: public, host: "evil.example.com", wantErr: true},
		{name: "public: suffix of public host", cfg: public, host: "example.com", wantErr: true},
		{name: "all-interfaces listener without public_url", cfg: config.Server{Listen: ":8080"}, host: "localhost:8080", wantErr: true},

		// allowed_hosts.
		{
			name: "allowed host", host: "alt.example.com:8443",
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedHosts: []string{"alt.example.com"}},
		},
		{
			name: "allowed host written with a port", host: "alt.example.com",
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedHosts: []string{"ALT.example.com:8443"}},
		},
		{
			name: "allowed IPv6 host", host: "[2001:db8::1]:8080",
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedHosts: []string{"[2001:db8::1]"}},
		},
		{
			name: "host not in allowed hosts", host: "other.example.com", wantErr: true,
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedHosts: []string{"alt.example.com"}},
		},

		// Origin.
		{name: "no Origin: not a browser", cfg: public, host: "mcp.example.com"},
		{name: "public_url origin", cfg: public, host: "mcp.example.com", origins: []string{"https://mcp.example.com"}},
		{name: "public_url origin any case", cfg: public, host: "mcp.example.com", origins: []string{"HTTPS://MCP.EXAMPLE.COM"}},
		{name: "public_url origin with another scheme over TLS", cfg: public, host: "mcp.example.com", tls: true, origins: []string{"http://mcp.example.com"}, wantErr: true},
		{name: "public_url origin with another port", cfg: public, host: "mcp.example.com", origins: []string{"https://mcp.example.com:8443"}, wantErr: true},
		{name: "same origin, plain HTTP", cfg: loopback, host: "localhost:8080", origins: []string{"http://localhost:8080"}},
		{name: "same origin, host case differs", cfg: loopback, host: "LocalHost:8080", origins: []string{"http://localhost:8080"}},
		{name: "same origin, TLS", cfg: loopback, host: "localhost:8443", tls: true, origins: []string{"https://localhost:8443"}},
		{name: "https origin on a plain request", cfg: loopback, host: "localhost:8080", origins: []string{"https://localhost:8080"}, wantErr: true},
		{name: "http origin on a TLS request", cfg: loopback, host: "localhost:8443", tls: true, origins: []string{"http://localhost:8443"}, wantErr: true},
		{name: "same host, other port", cfg: loopback, host: "localhost:8080", origins: []string{"http://localhost:9999"}, wantErr: true},
		{
			name: "allowed origin", host: "mcp.example.com", origins: []string{"https://app.example.com"},
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedOrigins: []string{"https://app.example.com"}},
		},
		{
			name: "allowed origin configured in upper case", host: "mcp.example.com", origins: []string{"https://app.example.com"},
			cfg: config.Server{Listen: "0.0.0.0:8080", PublicURL: "https://mcp.example.com", AllowedOrigins: []string{"https://APP.example.com"}},
		},
		{name: "foreign origin", cfg: public, host: "mcp.example.com", origins: []string{"https://evil.example.com"}, wantErr: true},
		{name: "foreign origin on loopback", cfg: loopback, host: "localhost:8080", origins: []string{"https://evil.example.com"}, wantErr: true},
		{name: "null origin", cfg: loopback, host: "localhost:8080", origins: []string{"null"}, wantErr: true},
		{name: "empty origin", cfg: loopback, host: "localhost:8080", origins: []string{""}, wantErr: true},
		{name: "origin with a path", cfg: public, host: "mcp.example.com", origins: []string{"https://mcp.example.com/"}, wantErr: true},
		{name: "two Origin headers, both allowed", cfg: public, host: "mcp.example.com", origins: []string{"https://mcp.example.com", "https://mcp.example.com"}, wantErr: true},
		{name: "two Origin headers, allowed first", cfg: public, host: "mcp.example.com", origins: []string{"https://mcp.example.com", "https://evil.example.com"}, wantErr: true},
		{name: "good origin but bad host", cfg: public, host: "evil.example.com", origins: []string{"https://mcp.example.com"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newOriginGuard(tt.cfg)
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			r.Host = tt.host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			for _, o := range tt.origins {
				r.Header.Add("Origin", o)
			}
			err := g.check(r)
			if !tt.wantErr {
				if err != nil {
					t.Errorf("check(Host %q, Origin %q) = %v, want allowed", tt.host, tt.origins, err)
				}
				return
			}
			var gwErr *Error
			if !errors.As(err, &gwErr) {
				t.Fatalf("check(Host %q, Origin %q) = %v, want a 403 *Error", tt.host, tt.origins, err)
			}
			if gwErr.Status != http.StatusForbidden || gwErr.Code != CodeForbidden {
				t.Errorf("check(Host %q, Origin %q) = %d/%d, want %d/%d", tt.host, tt.origins, gwErr.Status, gwErr.Code, http.StatusForbidden, CodeForbidden)
			}
		})
	}
}
