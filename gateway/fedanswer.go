package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/upstream"
)

// A member's request of the client on a federated route (sampling,
// elicitation, roots/list, ping), on the merged GET stream or on the
// stream of a routed request's answer, is decided as on the member's own
// route (allowServerRequest: a denied one never reaches the client, the
// member gets the refusal) and relayed under an id of the gateway's:
// "ctxgate-fed/<member>/<id>", the member's own id kept after the member's
// name (idKey's form: s:<string> or n:<number>). Two members' requests
// with the same id so never meet at the client. The client's answer with
// that id is sent to that member, on the client's session with it, with
// the member's own id back; an answer whose id names no member of the
// session is dropped (202, logged), as it would answer nothing.

// memberIDPrefix starts the id of a member's request relayed to the client.
const memberIDPrefix = "ctxgate-fed/"

// relayMemberRequest is transformRequest for a member's request of the
// client on a federated route: decided, redacted, then relayed under the
// gateway's id for it. Without a policy it is only re-identified.
func (s *Server) relayMemberRequest(ctx context.Context, fwd *forward, m *jsonrpc.Request, data []byte) ([]byte, bool) {
	if s.policy != nil {
		d, ok := s.allowServerRequest(ctx, fwd, m)
		if !ok {
			return data, true
		}
		var drop bool
		if data, drop = s.redactParams(ctx, fwd, m, data, d.Redact, "server_request"); drop {
			return data, true
		}
	}
	id, _ := json.Marshal(memberIDPrefix + fwd.route.upstream.Name + "/" + idKey(m.ID))
	out, err := withMessageID(data, id)
	if err != nil {
		loggerOf(ctx, s.log).Warn("a member's request of the client withheld: its id cannot be rewritten", "upstream", fwd.route.upstream.Name, "error", err)
		s.refuseFederated(fwd, m)
		return data, true
	}
	return out, false
}

// withMessageID is msg, a JSON-RPC message object, with its id replaced
// by id (JSON); every other member keeps its bytes.
func withMessageID(msg []byte, id []byte) ([]byte, error) {
	top, err := members(msg)
	if err != nil {
		return nil, err
	}
	found := false
	for i, t := range top {
		if t.name == "id" {
			top[i].value, found = id, true
		}
	}
	if !found {
		return nil, fmt.Errorf("message has no id")
	}
	return encodeObject(top), nil
}

// memberOfAnswer reads the gateway's id of a member's request: the
// member's name and its own id, as JSON.
func memberOfAnswer(id jsonrpc.ID) (member string, own []byte, ok bool) {
	s, isString := id.Raw().(string)
	rest, prefixed := strings.CutPrefix(s, memberIDPrefix)
	if !isString || !prefixed {
		return "", nil, false
	}
	member, key, ok := strings.Cut(rest, "/")
	if !ok {
		return "", nil, false
	}
	switch {
	case strings.HasPrefix(key, "s:"):
		own, _ = json.Marshal(key[2:])
	case strings.HasPrefix(key, "n:"):
		n, err := strconv.ParseInt(key[2:], 10, 64)
		if err != nil {
			return "", nil, false
		}
		own = strconv.AppendInt(nil, n, 10)
	default:
		return "", nil, false
	}
	return member, own, true
}

// answerMember sends the client's answer to a member's request on to
// that member, with the member's own id, on the client's session with it.
func (fr *fedRequest) answerMember(w http.ResponseWriter, resp *jsonrpc.Response, body []byte) error {
	var name string
	var own []byte
	ok := resp != nil
	if ok {
		name, own, ok = memberOfAnswer(resp.ID)
	}
	m := fr.f.member(name)
	if in, _ := fr.fo.reach(name); !ok || m == nil || !in {
		loggerOf(fr.r.Context(), fr.s.log).Warn("federated route: a client's answer dropped: its id names no request of a member of the session",
			"route", fr.f.cfg.Path, "member", clip(name, 64))
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	out, err := withMessageID(body, own)
	if err != nil {
		return badRequest("the answer cannot be routed", err)
	}
	claims := fr.fo.claims
	ctx, cancel := context.WithTimeout(upstream.WithRetry(fr.r.Context(), upstream.RetryNever), fr.f.cfg.MemberTimeout)
	defer cancel()
	// Never retried: the member may already have acted on the answer.
	answer, _, err := askMember(ctx, m, upstreamRequest{body: out, session: claims.Members[name], version: claims.Version, as: m.identity(fr.p)})
	if err != nil {
		return upstreamError(ctx, errMemberUnavailable{member: name, err: err})
	}
	if answer.StatusCode == http.StatusNotFound {
		return newError(http.StatusNotFound, CodeSessionNotFound, "session not found; initialize a new session", errMemberUnavailable{member: name, err: errMemberSessionEnded})
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// refuseFederated refuses a member's server-to-client request on a
// federated route that cannot be relayed so that the client's answer
// finds the member again (fedanswer.go): refused to the member.
func (s *Server) refuseFederated(fwd *forward, m *jsonrpc.Request) {
	go s.answerUpstream(fwd, errorMessage(m.ID, newError(0, CodeMethodNotFound, m.Method+" is not available on a federated route", nil)))
}
