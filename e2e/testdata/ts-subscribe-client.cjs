// A Streamable HTTP MCP client on the TypeScript SDK (pinned in
// e2e/node): it connects to URL, subscribes to every URI, calls TOOL (if
// not "-") with no arguments, and prints one line per
// notifications/resources/updated it receives ("updated <uri>") on stdout,
// until it is killed. Run by e2e/fedstream_test.go with
// NODE_PATH=e2e/node/node_modules:
//
//   node ts-subscribe-client.cjs URL TOOL URI...
//
// The SDK opens the session's GET stream on its own after initialize.
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { ResourceUpdatedNotificationSchema } = require('@modelcontextprotocol/sdk/types.js');

async function main() {
  const [url, tool, ...uris] = process.argv.slice(2);
  const client = new Client({ name: 'ts-subscribe-client', version: '1' });
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    console.log(`updated ${n.params.uri}`);
  });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  for (const uri of uris) {
    await client.subscribeResource({ uri });
  }
  console.log('subscribed');
  if (tool !== '-') {
    await client.callTool({ name: tool, arguments: {} });
  }
  console.log('called');
  setInterval(() => {}, 1 << 30); // stay until killed
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
