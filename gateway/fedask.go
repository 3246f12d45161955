package gateway

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// A member's requests of the client (sampling, elicitation, roots) on a
// federated session. They come on the event stream of the client request
// the member is answering, and are decided by the policy as on the
// member's own route; what differs is the id. The client sees the
// member's id under a federated one naming the member
// ("ctxgate-member:<member>:<the member's id as JSON>"), so its answer,
// POSTed on its own, can be sent back to that member on its session with
// the member's own id. This is also how a multi-round-trip tool works on
// a legacy federated session: the member's SDK turns the tool's input
// requests into such requests of the client (a legacy client cannot read
// an input_required result) and retries the tool with the answers.

// memberRequestPrefix starts the id the client sees for a member's request.
const memberRequestPrefix = "ctxgate-member:"

// The member requests relayed to clients and not yet answered are held
// per replica, in memory, so that only their answers reach a member, once:
// the ids are predictable, and an answer to a request the policy denied,
// or to none, must not reach the member as the client's. At most
// maxAsksPerSession per session and maxAsks in all (hashes, about 2 MiB);
// beyond either the oldest is forgotten, and its answer dropped.
const (
	maxAsksPerSession = 64
	maxAsks           = 16384
)

// memberAsks are the member requests relayed to clients, unanswered, by
// the client's session. The zero value is ready.
type memberAsks struct {
	mu        sync.Mutex
	all       list.List // askKey, oldest first
	bySession map[[32]byte]map[[32]byte]*list.Element
}

// askKey is one relayed request: the hashes of the client's session id
// and of the federated id the client saw.
type askKey struct{ session, id [32]byte }

// sessionAsks are one session's relayed requests, as a forward records
// them.
type sessionAsks struct {
	asks    *memberAsks
	session string
}

// issued records federated id as relayed to the client of the session.
func (sa *sessionAsks) issued(id string) {
	a, k := sa.asks, askKey{sha256.Sum256([]byte(sa.session)), sha256.Sum256([]byte(id))}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bySession == nil {
		a.bySession = map[[32]byte]map[[32]byte]*list.Element{}
	}
	ids := a.bySession[k.session]
	if _, ok := ids[k.id]; ok {
		return // an id the member reuses before its answer: answered once
	}
	if len(ids) >= maxAsksPerSession {
		// The session's oldest; a walk of at most maxAsks, only for a
		// session with that many requests unanswered.
		for e := a.all.Front(); e != nil; e = e.Next() {
			if e.Value.(askKey).session == k.session {
				a.drop(e)
				break
			}
		}
	}
	if a.all.Len() >= maxAsks {
		a.drop(a.all.Front())
	}
	if ids = a.bySession[k.session]; ids == nil {
		ids = map[[32]byte]*list.Element{}
		a.bySession[k.session] = ids
	}
	ids[k.id] = a.all.PushBack(k)
}

// answered reports whether federated id was relayed to the client of
// session and not answered yet, and forgets it: an answer goes once.
func (a *memberAsks) answered(session, id string) bool {
	k := askKey{sha256.Sum256([]byte(session)), sha256.Sum256([]byte(id))}
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.bySession[k.session][k.id]
	if e == nil {
		return false
	}
	a.drop(e)
	return true
}

// end forgets a session's requests (it ended).
func (a *memberAsks) end(session string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.bySession[sha256.Sum256([]byte(session))] {
		a.drop(e)
	}
}

// drop forgets one request, under a.mu.
func (a *memberAsks) drop(e *list.Element) {
	k := a.all.Remove(e).(askKey)
	ids := a.bySession[k.session]
	delete(ids, k.id)
	if len(ids) == 0 {
		delete(a.bySession, k.session)
	}
}

// memberRequestID is the id the client sees for member's request id.
func memberRequestID(member string, id jsonrpc.ID) (jsonrpc.ID, error) {
	raw, err := json.Marshal(id.Raw())
	if err != nil {
		return jsonrpc.ID{}, err
	}
	return jsonrpc.MakeID(memberRequestPrefix + member + ":" + string(raw))
}

// memberOfAnswer reads an id made by memberRequestID: the member and its
// own id; ok is false for any other id.
func memberOfAnswer(id jsonrpc.ID) (member string, own jsonrpc.ID, ok bool) {
	s, _ := id.Raw().(string)
	rest, found := strings.CutPrefix(s, memberRequestPrefix)
	if !found {
		return "", jsonrpc.ID{}, false
	}
	member, raw, found := strings.Cut(rest, ":")
	if !found {
		return "", jsonrpc.ID{}, false
	}
	var v any
	if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
		v = float64(n) // MakeID's number; ids beyond 2^53 are not kept exact by anyone
	} else if json.Unmarshal([]byte(raw), &v) != nil {
		return "", jsonrpc.ID{}, false
	}
	own, err := jsonrpc.MakeID(v)
	if err != nil || !own.IsValid() {
		return "", jsonrpc.ID{}, false
	}
	return member, own, true
}

// memberRequestRenamed gives a member's request of the client its
// federated id; every other message, and every message outside a
// federated route, is returned as it is.
func memberRequestRenamed(fwd *forward, data []byte) []byte {
	if fwd.federation == "" || !bytes.Contains(data, []byte(`"method"`)) {
		return data
	}
	msg, err := decodeRPC(data)
	req, ok := msg.(*jsonrpc.Request)
	if err != nil || !ok || !req.ID.IsValid() {
		return data
	}
	id, err := memberRequestID(fwd.route.upstream.Name, req.ID)
	if err != nil {
		return data
	}
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Request{ID: id, Method: req.Method, Params: req.Params})
	if err != nil {
		return data
	}
	if fwd.asks != nil {
		// Relayed: its answer, and only its, may reach the member.
		fwd.asks.issued(id.Raw().(string))
	}
	return out
}

// answerMember sends the client's answer to a member's request back to
// that member, on its session, with the member's own id. An answer to no
// request the gateway relayed on this session, or one already answered,
// is accepted and dropped: nothing awaits it.
func (fr *fedRequest) answerMember(w http.ResponseWriter) error {
	resp, _ := fr.st.msg.Msg.(*jsonrpc.Response)
	var member string
	var own jsonrpc.ID
	ok := resp != nil
	if ok {
		member, own, ok = memberOfAnswer(resp.ID)
	}
	m := fr.f.member(member)
	_, in := fr.fo.claims.Members[member]
	// Only an id the gateway relayed (memberRequestRenamed): any other
	// would let the client answer a request the policy denied, or one
	// never made.
	if !ok || m == nil || !in || !fr.f.asks.answered(fr.r.Header.Get("Mcp-Session-Id"), resp.ID.Raw().(string)) {
		loggerOf(fr.r.Context(), fr.s.log).Warn("federated session: a client's answer to no member request relayed to it; dropped", "route", fr.f.cfg.Path, "member", member)
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	body, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: own, Result: resp.Result, Error: resp.Error})
	if err != nil {
		return badRequest("the answer cannot be sent to the member", err)
	}
	ctx, cancel := context.WithTimeout(fr.r.Context(), fr.f.cfg.MemberTimeout)
	defer cancel()
	claims := fr.fo.claims
	// direct: the member must not read the answer twice, so it is never
	// retried (as answerUpstream's refusals are not).
	answer, raw, err := askAndRead(ctx, m.direct(), upstreamRequest{body: body, session: claims.Members[member], version: claims.Version,
		as: m.identity(fr.p), header: requestIDHeader(ctx)}, maxErrorBodyBytes)
	switch {
	case err != nil:
		return upstreamError(ctx, errMemberUnavailable{member: member, err: err})
	case sessionLost(answer, raw):
		return memberSessionEnded(errMemberUnavailable{member: member, err: errMemberSessionEnded})
	case answer.StatusCode >= 300:
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "the member refused the answer: HTTP "+strconv.Itoa(answer.StatusCode), nil)
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
