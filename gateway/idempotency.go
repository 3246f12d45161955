package gateway

import (
	"container/list"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// maxIdempotencyKeyBytes bounds a key; longer ones are refused.
const maxIdempotencyKeyBytes = 255

// idempotencyStore makes a tools/call with an idempotency key run at most
// once per principal and key within the window: the first call runs, a
// duplicate during it waits for it, a duplicate after it gets the same
// answer. It is in memory, so the guarantee is per replica; with redis
// configured the shared ledger (idemshared.go) is used instead. It holds
// at most max keys; when full, the oldest finished key is forgotten, and
// if every key is still running a new one is refused (503) rather than
// run without the guarantee.
type idempotencyStore struct {
	window time.Duration
	max    int
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*idemEntry
	order   *list.List // of *idemEntry, oldest first
}

// idemEntry is one key: running until done is closed, then its answer.
type idemEntry struct {
	key        string
	digest     [32]byte // of the call (tool and arguments): a key names one call
	elem       *list.Element
	done       chan struct{}
	ended      time.Time
	idemAnswer // set before done is closed
}

// idemAnswer is a first call's answer: a gateway error (replayed through
// the error writer), or the final JSON-RPC response.
type idemAnswer struct {
	gwErr       *Error
	status      int
	contentType string
	body        []byte
}

func newIdempotencyStore(window time.Duration, max int, now func() time.Time) *idempotencyStore {
	return &idempotencyStore{window: window, max: max, now: now, entries: map[string]*idemEntry{}, order: list.New()}
}

var (
	errIdempotencyMismatch = newError(http.StatusUnprocessableEntity, CodeIdempotencyMismatch, "idempotency key already used for a different call", nil)
	errIdempotencyFull     = newError(http.StatusServiceUnavailable, CodeOverloaded, "too many idempotent calls in progress; retry later", nil)
)

// begin finds or creates the entry for key. first reports that the caller
// runs the call and must finish the entry; otherwise it waits on done.
func (s *idempotencyStore) begin(key string, digest [32]byte) (e *idemEntry, first bool, err *Error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if e, ok := s.entries[key]; ok {
		if e.digest != digest {
			return nil, false, errIdempotencyMismatch
		}
		return e, false, nil
	}
	if len(s.entries) >= s.max && !s.evictOldestFinished() {
		return nil, false, errIdempotencyFull
	}
	e = &idemEntry{key: key, digest: digest, done: make(chan struct{})}
	e.elem = s.order.PushBack(e)
	s.entries[key] = e
	return e, true, nil
}

// finish records the answer and wakes the duplicates. A call that provably
// never ran (refused before it was sent) is forgotten, so that retrying
// with the same key runs it.
func (s *idempotencyStore) finish(e *idemEntry, ran bool) {
	s.mu.Lock()
	e.ended = s.now()
	if !ran {
		s.remove(e)
	}
	s.mu.Unlock()
	close(e.done)
}

// expire forgets finished keys older than the window, oldest first; it
// stops at the first one still inside it (later ones are younger).
func (s *idempotencyStore) expire(now time.Time) {
	for el := s.order.Front(); el != nil; {
		e := el.Value.(*idemEntry)
		el = el.Next()
		if !finished(e) {
			continue
		}
		if now.Sub(e.ended) < s.window {
			return
		}
		s.remove(e)
	}
}

func (s *idempotencyStore) evictOldestFinished() bool {
	for el := s.order.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*idemEntry); finished(e) {
			s.remove(e)
			return true
		}
	}
	return false
}

func (s *idempotencyStore) remove(e *idemEntry) {
	if s.entries[e.key] == e {
		delete(s.entries, e.key)
		s.order.Remove(e.elem)
	}
}

func finished(e *idemEntry) bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// idempotencyKey reads a tools/call's key: the Idempotency-Key header or
// params._meta["io.ctxgate/idempotency-key"]; both must agree. "" means
// none. The header is never forwarded upstream (see forwardedHeaders).
func idempotencyKey(r *http.Request, req *jsonrpc.Request) (string, error) {
	var header string
	switch vs := r.Header.Values("Idempotency-Key"); len(vs) {
	case 0:
	case 1:
		header = vs[0]
	default:
		return "", badRequest("more than one Idempotency-Key header", nil)
	}
	p := mcpwire.ParamsOf(req)
	if p == nil {
		// Params that fail the check (a non-string key among them) never
		// get this far from a client; refused all the same.
		return "", badRequest("_meta "+metaIdempotencyKey+" must be a non-empty string", nil)
	}
	meta := p.IdempotencyKey
	if p.HasIdempotencyKey && meta == "" {
		return "", badRequest("_meta "+metaIdempotencyKey+" must be a non-empty string", nil)
	}
	key := header
	switch {
	case header != "" && meta != "" && header != meta:
		return "", badRequest("Idempotency-Key header and _meta "+metaIdempotencyKey+" differ", nil)
	case key == "":
		key = meta
	}
	if len(key) > maxIdempotencyKeyBytes || strings.ContainsAny(key, "\x00") {
		return "", badRequest("idempotency key must be at most 255 bytes", nil)
	}
	return key, nil
}

// callDigest identifies a tools/call by tool and arguments (not _meta, which
// carries per-attempt data such as trace context).
func callDigest(req *jsonrpc.Request) [32]byte {
	var name string
	var arguments json.RawMessage
	if p := mcpwire.ParamsOf(req); p != nil {
		name, arguments = p.Name, json.RawMessage(p.Arguments)
	}
	args, _ := json.Marshal(arguments) // compacts
	return sha256.Sum256(append([]byte(name+"\x00"), args...))
}

// withID returns a JSON-RPC message with its id replaced, so a replayed
// answer carries the duplicate request's own id.
func withID(msg []byte, id jsonrpc.ID) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return nil, err
	}
	if _, ok := m["id"]; !ok {
		return nil, errors.New("answer has no id")
	}
	raw, err := json.Marshal(id.Raw())
	if err != nil {
		return nil, err
	}
	m["id"] = raw
	return json.Marshal(m)
}
