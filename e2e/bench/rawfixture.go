package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// rawFixture is the fast alternative to the SDK fixture (-fixture raw): a
// minimal Streamable HTTP server with the same tools, resource and answers, JSON
// responses only, no server-to-client stream. It exists to take the
// upstream's own cost (about 200µs of CPU a request for the SDK server)
// out of the way when the proxies, not the upstream, are the question.
type rawFixture struct {
	serviceTime      time.Duration   // slept in every request of servicedMethods
	list, call, read json.RawMessage // the fixed results
	tools            []string
	mu               sync.Mutex
	sessions         map[string]bool
}

func newRawFixture(serviceTime time.Duration, sh shape) *rawFixture {
	type tool struct {
		Name        string         `json:"name"`
		Description string         `json:"description"`
		InputSchema map[string]any `json:"inputSchema"`
		Annotations map[string]any `json:"annotations"`
	}
	var tools []tool
	for _, name := range sh.tools() {
		tools = append(tools, tool{Name: name, Description: "Fixture tool " + name + ": answers every call with the same text.",
			InputSchema: map[string]any{"type": "object", "properties": map[string]any{"key": map[string]any{"type": "string"}}},
			Annotations: map[string]any{"readOnlyHint": true}})
	}
	list, _ := json.Marshal(map[string]any{"tools": tools})
	call, _ := json.Marshal(map[string]any{"content": []map[string]any{{"type": "text", "text": sh.text()}}})
	read, _ := json.Marshal(map[string]any{"contents": []map[string]any{{"uri": fixtureResource, "mimeType": "text/plain", "text": fixtureText}}})
	return &rawFixture{serviceTime: serviceTime, list: list, call: call, read: read, tools: sh.tools(), sessions: map[string]bool{}}
}

type rawMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Name            string `json:"name"`
		URI             string `json:"uri"`
		ProtocolVersion string `json:"protocolVersion"`
	} `json:"params"`
}

func (f *rawFixture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sid := r.Header.Get("Mcp-Session-Id")
	switch r.Method {
	case http.MethodPost:
	case http.MethodDelete:
		f.mu.Lock()
		delete(f.sessions, sid)
		f.mu.Unlock()
		return
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var m rawMessage
	if err != nil || json.Unmarshal(body, &m) != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if m.Method == "initialize" {
		f.initialize(w, m)
		return
	}
	f.mu.Lock()
	known := f.sessions[sid]
	f.mu.Unlock()
	switch {
	case !known:
		http.Error(w, "session not found", http.StatusNotFound)
	case m.ID == nil: // a notification
		w.WriteHeader(http.StatusAccepted)
	case m.Method == "tools/list":
		time.Sleep(f.serviceTime)
		writeRPC(w, m.ID, f.list, "")
	case m.Method == "tools/call" && slices.Contains(f.tools, m.Params.Name):
		time.Sleep(f.serviceTime)
		writeRPC(w, m.ID, f.call, "")
	case m.Method == "tools/call":
		writeRPC(w, m.ID, nil, `{"code":-32602,"message":"unknown tool"}`)
	case m.Method == "resources/read" && m.Params.URI == fixtureResource:
		time.Sleep(f.serviceTime)
		writeRPC(w, m.ID, f.read, "")
	case m.Method == "resources/read":
		writeRPC(w, m.ID, nil, `{"code":-32002,"message":"resource not found"}`)
	case m.Method == "ping":
		writeRPC(w, m.ID, json.RawMessage(`{}`), "")
	default:
		writeRPC(w, m.ID, nil, `{"code":-32601,"message":"method not found"}`)
	}
}

func (f *rawFixture) initialize(w http.ResponseWriter, m rawMessage) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	sid := hex.EncodeToString(b)
	f.mu.Lock()
	f.sessions[sid] = true
	f.mu.Unlock()
	version := m.Params.ProtocolVersion
	if version == "" {
		version = protocolVersion
	}
	result, _ := json.Marshal(map[string]any{"protocolVersion": version, "capabilities": map[string]any{"tools": map[string]any{}, "resources": map[string]any{}},
		"serverInfo": map[string]any{"name": "ctxgate-bench-raw-fixture", "version": "1.0.0"}})
	w.Header().Set("Mcp-Session-Id", sid)
	writeRPC(w, m.ID, result, "")
}

// writeRPC writes a JSON-RPC response with either result or error.
func writeRPC(w http.ResponseWriter, id, result json.RawMessage, rpcErr string) {
	w.Header().Set("Content-Type", "application/json")
	out := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
	if rpcErr != "" {
		out = append(append(append(out, `,"error":`...), rpcErr...), '}')
	} else {
		out = append(append(append(out, `,"result":`...), result...), '}')
	}
	_, _ = w.Write(out)
}
