package upstream

// SessionGone reports whether the upstream's transport knows that the
// session id names has ended: a stdio session whose process exited or was
// reaped idle, an HTTP+SSE session whose stream was lost or reaped. It is
// false when the transport cannot know (a Streamable HTTP server keeps its
// sessions itself: its 404 says so), and for a session still open, which
// counts as used: its idle clock restarts, so it is not reaped just before
// the request it was asked about.
func (u *Upstream) SessionGone(id string) bool {
	switch {
	case u.Stdio != nil:
		return u.Stdio.get(id) == nil
	case u.SSE != nil:
		return u.SSE.session(id) == nil
	}
	return false
}
