package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// The modern era's subscriptions/listen on a federated route: the merged
// stream of fedstream.go, statelessly. The client's listen is sent to every
// member the request reaches (modern members; a bridged legacy-only member
// has no listen, fedmodern.go) and the policy allows, each with the
// client's list_changed flags and only the resource URIs that member owns,
// under its own names, and the client's id (so the member's
// subscriptionId is the client's). Each member's acknowledgement is
// awaited within member_timeout; the client then gets one
// notifications/subscriptions/acknowledged, the union of what the members
// agreed to (URIs under their federated names; members left out named in
// _meta io.ctxgate/partial), and the members' notifications merged, each
// decided and renamed as on the GET stream. A member's listen that ends is
// not opened again (the modern era has no resumption); when every member's
// has ended, the client gets the listen's result and its stream ends.
// Closing the stream is how the client cancels: every member's listen is
// closed with it.

// listenParams is what the gateway reads of a listen's params.
type listenParams struct {
	Notifications *listenNotifications `json:"notifications"`
	Meta          json.RawMessage      `json:"_meta,omitempty"`
}

// listenNotifications are the notifications a listen asks for (or a
// member agreed to).
type listenNotifications struct {
	ToolsListChanged      bool     `json:"toolsListChanged,omitempty"`
	PromptsListChanged    bool     `json:"promptsListChanged,omitempty"`
	ResourcesListChanged  bool     `json:"resourcesListChanged,omitempty"`
	ResourceSubscriptions []string `json:"resourceSubscriptions,omitempty"`
}

const (
	methodAcknowledged = "notifications/subscriptions/acknowledged"
	metaSubscriptionID = "io.modelcontextprotocol/subscriptionId"
)

// memberListen is one member's part of a listen while it is opened.
type memberListen struct {
	ms     *memberStream
	ack    listenNotifications
	denied bool
	// idle: the client asked this member for nothing (no URI of its, no
	// flag), so it is not asked.
	idle bool
	err  error
}

// listen serves a modern subscriptions/listen on a federated route.
func (fr *fedRequest) listen(w http.ResponseWriter, req *jsonrpc.Request) error {
	var params listenParams
	if err := json.Unmarshal(req.Params, &params); err != nil || params.Notifications == nil {
		return newError(http.StatusBadRequest, CodeInvalidParams, "invalid params: subscriptions/listen needs params.notifications", nil)
	}
	own, err := fr.listenURIs(params.Notifications.ResourceSubscriptions)
	if err != nil {
		return err
	}
	done, err := fr.s.openStream(fr.r.Context())
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithCancel(fr.r.Context())
	defer cancel()
	parts := fr.openListens(ctx, req, params, own)
	fs := &fedStream{fr: fr, events: make(chan memberEvent), inject: make(chan memberEvent, injectBuffer)}
	ack, err := fs.acknowledged(parts, req.ID)
	if err != nil {
		for _, ms := range fs.members {
			_ = ms.resp.Body.Close()
		}
		return err
	}
	fs.listening(req.ID)
	for _, ms := range fs.members {
		go fs.drain(ctx, ms)
	}
	open := fr.s.metrics.openStreams.WithLabelValues(fr.f.cfg.Name, "listen")
	open.Inc()
	defer open.Dec()
	fs.first = ack
	if len(fs.members) == 0 {
		// Nothing to listen to (no member was asked for anything, or the
		// policy let none be): acknowledged and ended at once, as a
		// server does.
		fs.first = append(ack, fs.ended()...)
	}
	fs.run(ctx, w)
	return nil
}

// listening makes fs a listen's merge: each member message decided and
// renamed as on the GET stream (no event ids: the modern era does not
// resume), and the listen's result once every member's listen ended.
func (fs *fedStream) listening(id jsonrpc.ID) {
	fs.listenID = id
	fs.handle = func(ctx context.Context, me memberEvent) []byte {
		if !me.ev.HasData || len(me.ev.Data) == 0 {
			return nil
		}
		data, drop := fs.fr.s.fedStreamMessage(ctx, me.ms.fwd, me.ev.Data)
		if drop {
			return nil
		}
		return (&sseEvent{Event: "message", Data: data, HasData: true}).AppendTo(nil)
	}
	fs.ended = func() []byte {
		result, _ := json.Marshal(map[string]any{"resultType": "complete", "_meta": map[string]any{metaSubscriptionID: id.Raw()}})
		return (&sseEvent{Event: "message", Data: resultMessage(id, result), HasData: true}).AppendTo(nil)
	}
}

// drain reads member ms's listen into the merge until it ends (closed,
// broken, or silent past the member's streams.idle_timeout, as on its own
// route); it is not opened again.
func (fs *fedStream) drain(ctx context.Context, ms *memberStream) {
	_, err := fs.read(ctx, ms)
	_ = ms.resp.Body.Close()
	if ctx.Err() == nil {
		fs.logEnd(ms, err)
	}
	select {
	case fs.events <- memberEvent{ms: ms}:
	case <-ctx.Done():
	}
}

// listenURIs sorts the client's resource URIs by the member that owns
// them, as the member's own URIs. A URI no member owns is not asked for
// (and so not acknowledged).
func (fr *fedRequest) listenURIs(uris []string) (map[string][]string, error) {
	own := map[string][]string{}
	learned := false
	for _, uri := range uris {
		member, name, ok := fr.f.names.inward(kindResource, uri)
		if !ok && !learned {
			fr.learnNames(fr.r.Context(), kindResource)
			learned = true
			member, name, ok = fr.f.names.inward(kindResource, uri)
		}
		if !ok {
			continue
		}
		if err := checkOwnName(kindResource, "notifications.resourceSubscriptions[]", name); err != nil {
			return nil, err
		}
		own[member] = append(own[member], name)
	}
	return own, nil
}

// openListens sends the listen to every member the request reaches, in
// parallel, and reads each one's acknowledgement within member_timeout.
func (fr *fedRequest) openListens(ctx context.Context, req *jsonrpc.Request, params listenParams, own map[string][]string) []memberListen {
	f := fr.f
	parts := make([]memberListen, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		name := m.upstream.Name
		n := *params.Notifications
		n.ResourceSubscriptions = own[name]
		if !n.ToolsListChanged && !n.PromptsListChanged && !n.ResourcesListChanged && len(n.ResourceSubscriptions) == 0 {
			parts[i].idle = true
			continue
		}
		if in, _ := fr.fo.reach(name); !in || fr.fo.members[name].bridged {
			parts[i].err = errNoMemberStream
			continue
		}
		body, err := json.Marshal(map[string]any{"notifications": n, "_meta": params.Meta})
		if err != nil {
			parts[i].err = err
			continue
		}
		mreq := &jsonrpc.Request{ID: req.ID, Method: req.Method, Params: body}
		in := fr.input(m, mreq)
		if _, ok := fr.allowed(in); !ok {
			parts[i].denied = true
			continue
		}
		mf := fr.forward(m)
		mf.stream, mf.listen = true, true
		in.Tool, in.Resource, in.Prompt, in.Params = nil, nil, nil, nil
		mf.base = in
		wg.Go(func() { parts[i] = fr.openListen(ctx, m, mf, mreq) })
	}
	wg.Wait()
	return parts
}

// openListen sends one member its listen and reads its acknowledgement,
// the first message of the stream, within member_timeout.
func (fr *fedRequest) openListen(ctx context.Context, m *route, mf *forward, req *jsonrpc.Request) memberListen {
	if _, err := fr.s.prepareCredential(fr.r, mf); err != nil {
		return memberListen{err: err}
	}
	msg, err := jsonrpc.EncodeMessage(req)
	if err != nil {
		return memberListen{err: err}
	}
	// The attempt puts the trace context in the body it forwards: this
	// member's, never the client's (attemptTransport).
	mf.body = msg
	// The listen lives as long as the client's stream; only the wait for
	// its acknowledgement is bounded.
	mctx, cancel := context.WithCancel(ctx)
	late := time.AfterFunc(fr.f.cfg.MemberTimeout, cancel)
	h := http.Header{"Mcp-Method": {req.Method}}
	if id := requestIDHeader(ctx); id != nil {
		h.Set("X-Request-Id", id.Get("X-Request-Id"))
	}
	resp, err := askUpstream(withForward(upstream.WithRetry(mctx, upstream.RetryStream), mf), m.viaResilience(),
		upstreamRequest{body: msg, version: fr.fo.version, as: m.identity(fr.p), header: h})
	if err == nil {
		var kind answerKind
		if kind, _, err = fr.s.checkAnswer(resp, mf); err == nil && kind != answerStream {
			_ = resp.Body.Close()
			err = fmt.Errorf("member answered the listen at once (HTTP %d), with nothing to listen to", resp.StatusCode)
		}
	}
	if err != nil {
		late.Stop()
		cancel()
		return memberListen{err: err}
	}
	ms := &memberStream{m: m, fwd: mf, resp: resp, events: mcpwire.NewReader(resp.Body)}
	ack, err := readAck(ms.events)
	if !late.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		_ = resp.Body.Close()
		cancel()
		return memberListen{err: fmt.Errorf("no acknowledgement of the listen: %w", err)}
	}
	// cancel ends with ctx (the client's stream): it is not leaked.
	context.AfterFunc(ctx, cancel)
	ms.subscribed = ack.ResourceSubscriptions
	return memberListen{ms: ms, ack: ack}
}

// readAck reads a listen stream's first message, which must be its
// acknowledgement.
func readAck(events *mcpwire.Reader) (listenNotifications, error) {
	for {
		ev, err := events.Next()
		if err != nil {
			return listenNotifications{}, err
		}
		if !ev.HasData || len(ev.Data) == 0 {
			continue
		}
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Notifications listenNotifications `json:"notifications"`
			} `json:"params"`
		}
		if json.Unmarshal(ev.Data, &msg) != nil || msg.Method != methodAcknowledged {
			return listenNotifications{}, errors.New("the listen's first message is not its acknowledgement")
		}
		return msg.Params.Notifications, nil
	}
}

// acknowledged keeps the members whose listen was acknowledged and
// returns the client's acknowledgement: the union of theirs, URIs under
// their federated names, the members left out in io.ctxgate/partial.
func (fs *fedStream) acknowledged(parts []memberListen, id jsonrpc.ID) ([]byte, error) {
	fr := fs.fr
	var agreed listenNotifications
	var missing []string
	denied := 0
	for i, pt := range parts {
		name := fr.f.members[i].upstream.Name
		switch {
		case pt.idle:
		case pt.denied:
			denied++
		case pt.err != nil:
			missing = append(missing, name)
			if !errors.Is(pt.err, errNoMemberStream) {
				loggerOf(fr.r.Context(), fr.s.log).Warn("federated listen: member left out", "route", fr.f.cfg.Path, "member", name, "error", pt.err)
			}
		default:
			fs.members = append(fs.members, pt.ms)
			agreed.ToolsListChanged = agreed.ToolsListChanged || pt.ack.ToolsListChanged
			agreed.PromptsListChanged = agreed.PromptsListChanged || pt.ack.PromptsListChanged
			agreed.ResourcesListChanged = agreed.ResourcesListChanged || pt.ack.ResourcesListChanged
			for _, uri := range pt.ack.ResourceSubscriptions {
				if u := fr.f.names.outward(kindResource, name, uri); !slices.Contains(agreed.ResourceSubscriptions, u) {
					agreed.ResourceSubscriptions = append(agreed.ResourceSubscriptions, u)
				}
			}
		}
	}
	switch {
	case len(fs.members) > 0:
	case denied == len(parts):
		return nil, newError(http.StatusOK, CodePolicyDenied, "request denied by policy", nil)
	case len(missing) > 0:
		return nil, newError(http.StatusBadGateway, CodeUpstreamUnavailable, "no member of the federated route acknowledged subscriptions/listen", nil)
	}
	meta := map[string]any{metaSubscriptionID: id.Raw()}
	if len(missing) > 0 {
		meta[partialMetaKey] = partialNote{Missing: missing}
	}
	params, err := json.Marshal(map[string]any{"notifications": agreed, "_meta": meta})
	if err != nil {
		return nil, err
	}
	msg, err := jsonrpc.EncodeMessage(&jsonrpc.Request{Method: methodAcknowledged, Params: params})
	if err != nil {
		return nil, err
	}
	return (&sseEvent{Event: "message", Data: msg, HasData: true}).AppendTo(nil), nil
}
