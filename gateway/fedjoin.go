package gateway

import (
	"encoding/json"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// A member that joins a session late (fedrecover.go) joins the session's
// open merged GET streams too: each is told (joinWatchers), opens the
// member's stream like the others', and sends its client
// notifications/tools|prompts|resources/list_changed for each kind the
// member declares, so the client lists again and finds its items.

// joinWatchers are the merged streams open per federated session id. The
// zero value is ready.
type joinWatchers struct {
	mu   sync.Mutex
	byID map[string][]chan memberJoin
}

// memberJoin is a member that joined a session.
type memberJoin struct {
	member, session string
	caps            map[string]json.RawMessage
}

// watch registers a stream of session id; stop unregisters it.
func (jw *joinWatchers) watch(id string) (joins <-chan memberJoin, stop func()) {
	ch := make(chan memberJoin, 8)
	jw.mu.Lock()
	defer jw.mu.Unlock()
	if jw.byID == nil {
		jw.byID = map[string][]chan memberJoin{}
	}
	jw.byID[id] = append(jw.byID[id], ch)
	return ch, func() {
		jw.mu.Lock()
		defer jw.mu.Unlock()
		chans := jw.byID[id]
		for i, c := range chans {
			if c == ch {
				chans = append(chans[:i], chans[i+1:]...)
				break
			}
		}
		if len(chans) == 0 {
			delete(jw.byID, id)
		} else {
			jw.byID[id] = chans
		}
	}
}

// announce tells every stream of session id that j joined. A stream too
// busy to take it misses it (its client's next GET has the member).
func (jw *joinWatchers) announce(id string, j memberJoin) {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	for _, ch := range jw.byID[id] {
		select {
		case ch <- j:
		default:
		}
	}
}

// join adds a member that joined the session to the merged stream and
// returns what its client gets: a list_changed per kind the member
// declares. ok is false when the member is already merged (or unknown).
func (fs *fedStream) join(j memberJoin) (*memberStream, []byte, bool) {
	m := fs.fr.f.member(j.member)
	if m == nil {
		return nil, nil, false
	}
	for _, ms := range fs.members {
		if ms.m == m {
			return nil, nil, false
		}
	}
	ms := fs.memberStream(m)
	ms.fwd.upstreamSession = j.session
	fs.members = append(fs.members, ms)
	var out []byte
	for _, kind := range []string{"tools", "prompts", "resources"} {
		if _, ok := j.caps[kind]; !ok {
			continue
		}
		// The gateway's own message: the member's items are new to the
		// client's lists (each is then filtered as any list is).
		msg, err := jsonrpc.EncodeMessage(&jsonrpc.Request{Method: "notifications/" + kind + "/list_changed"})
		if err != nil {
			continue
		}
		out = append(out, fs.sealed(sseEvent{Event: "message", Data: msg, HasData: true})...)
	}
	return ms, out, true
}
