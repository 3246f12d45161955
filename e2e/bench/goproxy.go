package main

import (
	"flag"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// newGoProxy is the Go floor for one proxy hop: httputil.ReverseProxy with
// nothing but a rewrite to the upstream, over a transport tuned as a proxy's
// must be (Go's default keeps 2 idle connections per host, which would make
// it dial constantly under load).
//
// Each request is served full duplex. Without it, a fast upstream (the raw
// fixture) can answer before the transport's write loop has made its last
// read of the forwarded request body (the probe for bytes past
// Content-Length); the server, writing the response header, then consumes
// and closes that body under the write loop, whose read fails ("invalid
// Read on closed Body"); the transport drops the upstream connection, and
// the answer being copied is cut short ("use of closed network connection"
// on the upstream read). Full duplex leaves the body to the transport.
func newGoProxy(target *url.URL) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An error means HTTP/2 or a wrapped writer, where the server
		// does not close the body under the handler.
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
}

// runGoProxy is the "goproxy" role.
func runGoProxy(args []string) error {
	fs := flag.NewFlagSet("goproxy", flag.ContinueOnError)
	target := fs.String("target", "", "upstream URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil {
		return err
	}
	return serveAndAnnounce(newGoProxy(u))
}
