package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

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
	return out
}

// answerMember sends the client's answer to a member's request back to
// that member, on its session, with the member's own id. An answer to no
// request the gateway relayed is accepted and dropped: nothing awaits it.
func (fr *fedRequest) answerMember(w http.ResponseWriter) error {
	resp, _ := fr.st.msg.Msg.(*jsonrpc.Response)
	var member string
	var own jsonrpc.ID
	ok := resp != nil
	if ok {
		member, own, ok = memberOfAnswer(resp.ID)
	}
	m := fr.f.member(member)
	if _, in := fr.fo.claims.Members[member]; !ok || m == nil || !in {
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
