// Drives alyd with the official MCP TypeScript SDK v2 client
// (@modelcontextprotocol/client), in either protocol era:
//   node sdk2-client.mjs URL TOKEN MODE SCRIPT_JSON
// MODE is "modern" (pinned to 2026-07-28: server/discover, no initialize, no
// session), "auto" (probe with server/discover, fall back to initialize) or
// "legacy" (the SDK's default: initialize and a session).  SCRIPT_JSON is
// {"calls":[{"name":..., "arguments":{...}}, ...]}.  The client declares
// elicitation and answers every question with {"name": "Ada"}: on the modern
// era the SDK fulfils input_required results itself, on a legacy session it
// answers real elicitation/create requests.  Prints one JSON object:
// {"protocolVersion", "serverInfo", "discover", "sessionId", "tools": [names],
// "results": [...], "elicited": N} -- or {"error": message} and exit status 1.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, token, mode, scriptText] = process.argv.slice(2);
const script = JSON.parse(scriptText || '{"calls":[]}');
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const negotiation = mode === "modern" ? { mode: { pin: "2026-07-28" } } : mode === "auto" ? { mode: "auto" } : { mode: "legacy" };
const client = new Client(
  { name: "alyd-interop-v2", version: "1.0.0" },
  { capabilities: { elicitation: {} }, versionNegotiation: negotiation },
);
const out = { results: [], elicited: 0 };
client.setRequestHandler("elicitation/create", async () => {
  out.elicited++;
  return { action: "accept", content: { name: "Ada" } };
});
try {
  await client.connect(transport);
  out.protocolVersion = client.getNegotiatedProtocolVersion();
  out.serverInfo = client.getServerVersion();
  out.sessionId = transport.sessionId;
  if (mode !== "legacy") out.discover = await client.discover();
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
  await client.close();
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e), partial: out }));
  process.exit(1);
}
