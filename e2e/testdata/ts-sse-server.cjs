// An HTTP+SSE (protocol 2024-11-05) MCP server built on the TypeScript
// SDK's SSEServerTransport, as its documentation shows one: GET /sse opens
// a session's stream (its first event announces /messages?sessionId=...),
// POST /messages carries the client's messages. Run by e2e/sseupstream_test.go
// with NODE_PATH=e2e/node/node_modules (the SDK pinned there):
//
//   node ts-sse-server.cjs PORT     (0: any free port)
//
// It listens on 127.0.0.1 only and prints "listening on 127.0.0.1:<port>"
// on stderr when ready, and "executed <tool>" for each tool it runs.
//
// Tools: lookup (read-only) answers "found <query>" and, before it
// answers, sends on the session's stream notifications/resources/updated
// for secret://vault and for note://readme, then a log message; wipe
// (destructive). Resources: note://readme, secret://vault.
const http = require('node:http');
const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { SSEServerTransport } = require('@modelcontextprotocol/sdk/server/sse.js');
const { z } = require('zod');

function newServer() {
  const server = new McpServer(
    { name: 'ts-sse-server', version: '1' },
    { capabilities: { logging: {}, resources: { subscribe: true } } },
  );
  server.registerTool(
    'lookup',
    {
      description: 'looks a query up',
      inputSchema: { query: z.string() },
      annotations: { readOnlyHint: true },
    },
    async ({ query }) => {
      console.error('executed lookup');
      await server.server.sendResourceUpdated({ uri: 'secret://vault' });
      await server.server.sendResourceUpdated({ uri: 'note://readme' });
      await server.server.sendLoggingMessage({ level: 'info', data: `looked up ${query}` });
      return { content: [{ type: 'text', text: `found ${query}` }] };
    },
  );
  server.registerTool(
    'wipe',
    { description: 'wipes everything', annotations: { destructiveHint: true } },
    async () => {
      console.error('executed wipe');
      return { content: [{ type: 'text', text: 'wiped' }] };
    },
  );
  for (const [name, uri] of [['readme', 'note://readme'], ['vault', 'secret://vault']]) {
    server.registerResource(name, uri, { mimeType: 'text/plain' }, async (u) => ({
      contents: [{ uri: u.href, mimeType: 'text/plain', text: `contents of ${name}` }],
    }));
  }
  return server;
}

const transports = new Map();

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (req.method === 'GET' && url.pathname === '/sse') {
    const transport = new SSEServerTransport('/messages', res);
    transports.set(transport.sessionId, transport);
    res.on('close', () => transports.delete(transport.sessionId));
    await newServer().connect(transport);
    return;
  }
  if (req.method === 'POST' && url.pathname === '/messages') {
    const transport = transports.get(url.searchParams.get('sessionId'));
    if (!transport) {
      res.writeHead(404).end('unknown session');
      return;
    }
    await transport.handlePostMessage(req, res);
    return;
  }
  res.writeHead(404).end('not found');
});

httpServer.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.error(`listening on 127.0.0.1:${httpServer.address().port}`);
});
