// A Streamable HTTP MCP server built as the TypeScript SDK's examples
// build one (simpleStreamableHttp): one StreamableHTTPServerTransport per
// session, kept in a map by session id; an initialize without a session
// opens one; any other request whose session is not in the map is
// answered 400 {"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad
// Request: No valid session ID provided"},"id":null}. A restarted process
// has an empty map: every session it had is lost, answered so. Run by
// e2e/sseupstream_test.go with NODE_PATH=e2e/node/node_modules (the SDK
// pinned there):
//
//   node ts-streamable-server.cjs PORT     (0: any free port)
//
// It listens on 127.0.0.1 only and prints "listening on 127.0.0.1:<port>"
// on stderr when ready. Its one tool, whoami (read-only), answers
// "process <pid>", so a caller can tell which process served it.
const http = require('node:http');
const { randomUUID } = require('node:crypto');
const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = require('@modelcontextprotocol/sdk/server/streamableHttp.js');
const { isInitializeRequest } = require('@modelcontextprotocol/sdk/types.js');

function newServer() {
  const server = new McpServer({ name: 'ts-streamable-server', version: '1' });
  server.registerTool(
    'whoami',
    { description: 'names the process serving the call', annotations: { readOnlyHint: true } },
    async () => ({ content: [{ type: 'text', text: `process ${process.pid}` }] }),
  );
  return server;
}

const transports = new Map();

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const httpServer = http.createServer(async (req, res) => {
  const sessionId = req.headers['mcp-session-id'];
  let body;
  if (req.method === 'POST') {
    try {
      body = JSON.parse(await readBody(req));
    } catch {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null }));
      return;
    }
  }
  let transport = sessionId ? transports.get(sessionId) : undefined;
  if (!transport && !sessionId && req.method === 'POST' && isInitializeRequest(body)) {
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => transports.set(id, transport),
    });
    transport.onclose = () => transports.delete(transport.sessionId);
    await newServer().connect(transport);
  }
  if (!transport) {
    res.writeHead(400, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'Bad Request: No valid session ID provided' }, id: null }));
    return;
  }
  await transport.handleRequest(req, res, body);
});

httpServer.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.error(`listening on 127.0.0.1:${httpServer.address().port}`);
});
