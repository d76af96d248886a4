// Drives alyd with the official MCP TypeScript SDK client, as a user's client
// would: connect (initialize), list tools, call tools, terminate the session.
//   node sdk-client.mjs URL TOKEN SCRIPT_JSON
// SCRIPT_JSON is {"calls":[{"name":..., "arguments":{...}}, ...]}.  Prints one
// JSON object: {"serverVersion", "sessionId", "tools": [names], "results": [...],
// "terminated": bool} -- or {"error": message} and exit status 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, scriptText] = process.argv.slice(2);
const script = JSON.parse(scriptText || '{"calls":[]}');
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "alyd-interop", version: "1.0.0" });
const out = { results: [] };
try {
  await client.connect(transport);
  out.serverVersion = client.getServerVersion();
  out.sessionId = transport.sessionId;
  const tools = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
  } while (cursor);
  out.tools = tools;
  for (const c of script.calls) {
    out.results.push(await client.callTool({ name: c.name, arguments: c.arguments || {} }));
  }
  await transport.terminateSession();
  out.terminated = transport.sessionId === undefined;
  await client.close();
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e), partial: out }));
  process.exit(1);
}
