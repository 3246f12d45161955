// An old MCP client: the TypeScript SDK's SSEClientTransport (the HTTP+SSE
// transport of protocol 2024-11-05) against the URL given as the first
// argument (a gateway route's /sse). It lists tools and resources, calls
// the tools named by the remaining arguments, reads file:///readme, waits
// for one notifications/message from the server, and prints what it saw
// as one JSON object. Run by e2e/oldclient_test.go with the pinned Node.
const sdk = new URL('../node/node_modules/@modelcontextprotocol/sdk/dist/esm/', import.meta.url);
const { Client } = await import(new URL('client/index.js', sdk));
const { SSEClientTransport } = await import(new URL('client/sse.js', sdk));
const { LoggingMessageNotificationSchema } = await import(new URL('types.js', sdk));

const [url, ...tools] = process.argv.slice(2);
const client = new Client({ name: 'old-ts-client', version: '1' });
let notified;
const notification = new Promise((resolve) => { notified = resolve; });
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => notified(n.params.data));

await client.connect(new SSEClientTransport(new URL(url)));
const out = { serverName: client.getServerVersion()?.name };
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.calls = {};
for (const name of tools) {
  try {
    const res = await client.callTool({ name, arguments: {} });
    out.calls[name] = { text: res.content?.[0]?.text, isError: !!res.isError };
  } catch (err) {
    out.calls[name] = { code: err.code, message: err.message };
  }
}
out.resources = (await client.listResources()).resources.map((r) => r.uri);
out.read = (await client.readResource({ uri: 'file:///readme' })).contents[0]?.text;
out.notification = await notification;
console.log(JSON.stringify(out));
await client.close();
