package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"html"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/ctxgate/ctxgate/upstream"
)

// The connect-your-account pages of user_oauth upstreams:
//
//	GET  /oauth/connect/<upstream>?link=   who the link is for, and a button
//	POST /oauth/connect/<upstream>         spends the link, sets the browser
//	                                       cookie, redirects to the provider
//	GET  /oauth/callback?state=&code=      redeems the code (PKCE), stores
//	                                       the grant for the link's principal
//	POST /oauth/disconnect/<upstream>      the caller (bearer) forgets theirs
//
// The link in the elicitation is the capability: single-use, short-lived,
// minted for the principal whose request needed it. The confirm page names
// that principal, so a user sent someone else's link can tell.
const (
	connectPath    = "/oauth/connect/"
	callbackPath   = "/oauth/callback"
	disconnectPath = "/oauth/disconnect/"
	connectCookie  = "ctxgate_connect"
)

// mountConnect adds the pages to the public router; routes gives each
// user_oauth upstream's route, whose authentication disconnect uses.
func (s *Server) mountConnect(r chi.Router, routes []*route) {
	mounted := false
	for _, rt := range routes {
		if rt.fed != nil || rt.upstream.Connector == nil {
			continue
		}
		mounted = true
		conn, name := rt.upstream.Connector, rt.upstream.Name
		r.Get(connectPath+name, func(w http.ResponseWriter, r *http.Request) { s.connectPage(w, r, conn, name) })
		r.Post(connectPath+name, func(w http.ResponseWriter, r *http.Request) { s.connectStart(w, r, conn) })
		r.With(s.authenticate(rt)).Post(disconnectPath+name, func(w http.ResponseWriter, r *http.Request) { s.disconnect(w, r, conn) })
	}
	if mounted {
		r.Get(callbackPath, s.connectCallback)
	}
}

// connectPage asks the user to confirm, naming the principal the link was
// minted for.
func (s *Server) connectPage(w http.ResponseWriter, r *http.Request, conn *upstream.Connector, name string) {
	link := r.URL.Query().Get("link")
	principal, ok := conn.LinkPrincipal(link)
	if !ok {
		writePage(w, http.StatusBadRequest, "Link expired", "This connect link is unknown, already used or expired. Retry the request in your MCP client for a new one.")
		return
	}
	body := "<p>Connect your <b>" + html.EscapeString(name) + "</b> account for gateway user <b>" + html.EscapeString(principal) +
		"</b>?</p><p>Only continue if that is you.</p><form method=\"post\"><input type=\"hidden\" name=\"link\" value=\"" +
		html.EscapeString(link) + "\"><button type=\"submit\">Continue to sign in</button></form>"
	writePageHTML(w, http.StatusOK, "Connect "+name, body)
}

// connectStart spends the link and sends the browser to the provider. The
// cookie binds the flow to this browser. A cross-site page cannot post
// here to skip the confirmation: browsers send Origin with a POST, and the
// origin guard in front of every route refuses a foreign one (403).
func (s *Server) connectStart(w http.ResponseWriter, r *http.Request, conn *upstream.Connector) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	browser := base64.RawURLEncoding.EncodeToString(b[:])
	target, err := conn.Begin(r.PostFormValue("link"), browser)
	if err != nil {
		writePage(w, http.StatusBadRequest, "Link expired", "This connect link is unknown, already used or expired. Retry the request in your MCP client for a new one.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: connectCookie, Value: browser, Path: "/oauth/", MaxAge: 600, HttpOnly: true,
		// Lax: sent on the provider's top-level redirect back, not on
		// cross-site subrequests.
		SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(s.cfg.Server.PublicURL, "https://"),
	})
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// connectCallback finishes the flow the state names.
func (s *Server) connectCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	var conn *upstream.Connector
	var name string
	for _, up := range s.pool.All() {
		if up.Connector != nil && up.Connector.Owns(state) {
			conn, name = up.Connector, up.Name
		}
	}
	log := loggerOf(r.Context(), s.log)
	if conn == nil {
		log.Warn("connect callback refused", "reason", "unknown state")
		writePage(w, http.StatusBadRequest, "Not connected", "This sign-in is unknown, already finished or expired. Retry the request in your MCP client.")
		return
	}
	if e := q.Get("error"); e != "" {
		log.Warn("connect callback refused", "upstream", name, "reason", "provider error", "idp_error", clip(e, 64))
		writePage(w, http.StatusBadRequest, "Not connected", "The provider did not grant access.")
		return
	}
	cookie, _ := r.Cookie(connectCookie)
	browser := ""
	if cookie != nil {
		browser = cookie.Value
	}
	principal, err := conn.Complete(r.Context(), state, q.Get("code"), browser)
	if err != nil {
		log.Warn("connect callback refused", "upstream", name, "error", err.Error())
		msg := "The sign-in could not be completed. Retry the request in your MCP client."
		if errors.Is(err, upstream.ErrConnectState) {
			msg = "This sign-in was started in another browser, already finished, or expired. Retry the request in your MCP client."
		}
		writePage(w, http.StatusBadRequest, "Not connected", msg)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: connectCookie, Path: "/oauth/", MaxAge: -1})
	log.Info("account connected", "upstream", name, "principal", principal)
	writePage(w, http.StatusOK, "Connected", "Your "+name+" account is connected for "+principal+". Return to your MCP client and retry.")
}

// disconnect forgets the calling principal's grant.
func (s *Server) disconnect(w http.ResponseWriter, r *http.Request, conn *upstream.Connector) {
	p, err := principalOf(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	had, err := conn.Disconnect(p.ID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"principal": p.ID, "disconnected": had})
}

// adminDeleteGrant is DELETE /admin/grants/<principal>/<upstream>, the
// principal path-escaped (oidc%3Ahttps%3A%2F%2Fidp%23alice).
func (s *Server) adminDeleteGrant(w http.ResponseWriter, r *http.Request) {
	principal, err := url.PathUnescape(chi.URLParam(r, "principal"))
	up := s.pool.Get(chi.URLParam(r, "upstream"))
	if err != nil || up == nil || up.Connector == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no user_oauth upstream of that name, or a principal that is not path-escaped"})
		return
	}
	had, err := up.Connector.Disconnect(principal)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if !had {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no grant for that principal"})
		return
	}
	s.log.Info("grant revoked by the operator", "upstream", up.Name, "principal", principal)
	writeJSON(w, http.StatusOK, map[string]any{"principal": principal, "upstream": up.Name, "deleted": true})
}

func writePage(w http.ResponseWriter, status int, title, text string) {
	writePageHTML(w, status, title, "<p>"+html.EscapeString(text)+"</p>")
}

// writePageHTML writes a small page that is never cached, framed, or
// leaks its URL (which may hold a code) through Referer.
func writePageHTML(w http.ResponseWriter, status int, title, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte("<!doctype html><title>" + html.EscapeString(title) + "</title><h1>" + html.EscapeString(title) + "</h1>" + body + "\n"))
}
