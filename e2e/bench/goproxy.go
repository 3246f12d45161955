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
func newGoProxy(target *url.URL) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
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
