package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkScript is the Lua script that makes wrk send the workload on the
// sessions the Go generator opened: the same bodies, headers and mix, ids
// unique per thread, and a check of every answer (HTTP 200 with a
// JSON-RPC result). done() prints one JSON line, a loadResult.
func wrkScript(sessions []*session) string {
	var b strings.Builder
	b.WriteString("local sessions = {\n")
	for _, s := range sessions {
		fmt.Fprintf(&b, "  {id = %s, token = %s},\n", luaString(s.id), luaString(s.token))
	}
	fmt.Fprintf(&b, "}\nlocal mix_every, list_at, read_at = %d, %d, %d\nlocal call_keys = %d\nlocal tool = %s\nlocal resource = %s\nlocal version = %s\nlocal cache_header = %s\n",
		mixEvery, listAt, readAt, callKeys, luaString(fixtureTool), luaString(fixtureResource), luaString(protocolVersion), luaString(cacheHeader))
	b.WriteString(wrkLua)
	return b.String()
}

// luaString quotes s for Lua; session ids and tokens are printable ASCII,
// anything else is escaped by its byte value.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := range len(s) {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			fmt.Fprintf(&b, "\\%d", c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

const wrkLua = `
local threads = {}

function setup(thread)
  thread:set("base", 2097152 + #threads * 1000000000)
  table.insert(threads, thread)
end

function init(args)
  n = base
  failed = 0
  first = ""
  hits, misses, other = 0, 0, 0
end

function request()
  n = n + 1
  local s = sessions[(n % #sessions) + 1]
  local headers = {["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream",
    ["Mcp-Session-Id"] = s.id, ["Mcp-Protocol-Version"] = version}
  if s.token ~= "" then headers["Authorization"] = "Bearer " .. s.token end
  local body
  if n % mix_every == list_at then
    body = string.format('{"jsonrpc":"2.0","id":%d,"method":"tools/list"}', n)
  elseif n % mix_every == read_at then
    body = string.format('{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":"%s"}}', n, resource)
  else
    body = string.format('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":{"key":"k%d"}}}', n, tool, n % call_keys)
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  local cached = headers[cache_header]
  if cached == "hit" then hits = hits + 1
  elseif cached == "miss" then misses = misses + 1
  elseif cached ~= nil then other = other + 1 end
  if status ~= 200 or not body:find('"result":', 1, true) or body:find('"error":', 1, true) then
    failed = failed + 1
    if first == "" then
      first = (status .. " " .. body:sub(1, 300)):gsub('[^%w%p ]', ' '):gsub('[\\"]', "'")
    end
  end
end

function done(summary, latency, requests)
  local failed, first, hits, misses, other = 0, "", 0, 0, 0
  for _, t in ipairs(threads) do
    failed = failed + t:get("failed")
    hits, misses, other = hits + t:get("hits"), misses + t:get("misses"), other + t:get("other")
    if first == "" then first = t:get("first") end
  end
  local e = summary.errors
  local sock = e.connect + e.read + e.write + e.timeout
  if first == "" and sock > 0 then first = "socket errors" end
  io.write(string.format('{"requests":%d,"errors":%d,"seconds":%.6f,"first_error":"%s","cache_hits":%d,"cache_misses":%d,"cache_other":%d}\n',
    summary.requests, failed + sock, summary.duration / 1e6, first, hits, misses, other))
end
`

// wrkClosedLoop runs the closed loop with wrk (one thread, as it shares a
// CPU with the upstream) instead of the Go generator.
func wrkClosedLoop(ctx context.Context, dir string, sessions []*session, conns int, d time.Duration) (loadResult, error) {
	script, err := os.CreateTemp(dir, "wrk-*.lua")
	if err != nil {
		return loadResult{}, err
	}
	defer os.Remove(script.Name())
	if _, err := script.WriteString(wrkScript(sessions)); err != nil {
		return loadResult{}, err
	}
	script.Close()
	// wrk takes whole seconds.
	secs := max(1, int(math.Ceil(d.Seconds())))
	cmd := exec.CommandContext(ctx, "wrk", "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(secs)+"s",
		"--timeout", "30s", "-s", script.Name(), sessions[0].url)
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(out)
}

// parseWrk reads the JSON line the script's done() printed after wrk's
// own report.
func parseWrk(out []byte) (loadResult, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	last := lines[len(lines)-1]
	var r loadResult
	if !bytes.HasPrefix(last, []byte("{")) {
		return r, fmt.Errorf("wrk printed no result line: %.500s", out)
	}
	if err := json.Unmarshal(last, &r); err != nil {
		return r, fmt.Errorf("wrk result %q: %w", last, err)
	}
	return r, nil
}
