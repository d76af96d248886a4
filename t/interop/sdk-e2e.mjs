// What connect-claude-desktop.txt promises a user: "List my Aly sites and tell
// me which one has the most products."  Done as a model would, with the
// official TypeScript SDK client: sites.list, then products.list per site,
// following next_cursor to the end (small pages, so paging really happens).
//   node sdk-e2e.mjs URL TOKEN   -> {"counts":{site_id:n}, "most": site_id, "pages": n}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "alyd-e2e", version: "1.0.0" });
try {
  await client.connect(transport);
  const sites = [];
  let cursor;
  do {
    const r = await client.callTool({ name: "sites.list", arguments: cursor ? { cursor, limit: 2 } : { limit: 2 } });
    if (r.isError) throw new Error(r.content[0].text);
    sites.push(...r.structuredContent.sites);
    cursor = r.structuredContent.next_cursor;
  } while (cursor);
  const counts = {};
  let pages = 0;
  for (const s of sites) {
    counts[s.id] = 0;
    let c;
    do {
      const args = { site_id: s.id, limit: 10 };
      if (c) args.cursor = c;
      const r = await client.callTool({ name: "products.list", arguments: args });
      if (r.isError) throw new Error(r.content[0].text);
      counts[s.id] += r.structuredContent.products.length;
      c = r.structuredContent.next_cursor;
      pages++;
    } while (c);
  }
  const most = Object.keys(counts).sort((a, b) => counts[b] - counts[a])[0];
  const listed = Object.fromEntries(sites.map((s) => [s.id, s.product_count]));
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify({ counts, listed, most, pages }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.message ? e.message : e) }));
  process.exit(1);
}
