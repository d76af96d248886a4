// The second comparison peer of scripts/bench: alyd's sites.list written with
// the official MCP TypeScript SDK v2 server (@modelcontextprotocol/server,
// McpServer + createMcpHandler), which serves 2026-07-28 (modern) requests
// and, statelessly, 2025-era ones, over HTTP/1.1 on node:http.
//
//   node scripts/bench-peer2.mjs --port N --sites FILE --key KEY
//
// FILE holds the structuredContent alyd returns for sites.list; the tool
// serves it from memory as structuredContent plus the same JSON as text, with
// the same input and output schemas as alyd's (zod), so the SDK validates the
// arguments and the result as it does for any tool.  createMcpHandler calls
// the factory once per request, as the SDK documents for stateless serving.
// The handler is fetch-shaped (web Request/Response); node:http requests are
// adapted to it here.  The bearer token is checked against KEY (401
// otherwise).  The SDK is found in BENCH_NODE_MODULES (default:
// build/node/node_modules, where scripts/install-node puts it).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name) => {
    const i = args.indexOf(name);
    return i < 0 ? undefined : args[i + 1];
};
const port = Number(opt('--port') || 0);
const sitesFile = opt('--sites');
const key = opt('--key');
if (!port || !sitesFile || !key) {
    console.error('usage: bench-peer2.mjs --port N --sites FILE --key KEY');
    process.exit(2);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const nm = process.env.BENCH_NODE_MODULES || path.join(here, '..', 'build', 'node', 'node_modules');
const load = (p) => import(pathToFileURL(path.join(nm, p)).href);
const { McpServer, createMcpHandler } = await load('@modelcontextprotocol/server/dist/index.mjs');
const z = await load('zod/v4/index.js');

const sites = JSON.parse(fs.readFileSync(sitesFile, 'utf8'));
const site = z.object({
    id: z.string(),
    name: z.string(),
    domain: z.string(),
    currency: z.string(),
    product_count: z.number().int(),
    order_count: z.number().int(),
    version: z.number().int(),
    created_at: z.string().nullable(),
    updated_at: z.string().nullable(),
});

const factory = () => {
    const server = new McpServer({ name: 'bench-peer2', version: '1.0.0' });
    server.registerTool(
        'sites.list',
        {
            title: 'List sites',
            description: 'List the sites (online shops) of this workspace.',
            inputSchema: z.object({ limit: z.number().int().min(1).max(100).optional(), cursor: z.string().optional() }),
            outputSchema: z.object({ sites: z.array(site), next_cursor: z.string().nullable() }),
            annotations: { readOnlyHint: true, idempotentHint: true },
        },
        async () => ({ content: [{ type: 'text', text: JSON.stringify(sites) }], structuredContent: sites }),
    );
    return server;
};
const handler = createMcpHandler(factory, { onerror: (e) => console.error('bench-peer2:', e.message) });

const send = (res, status, obj, extra = {}) => {
    const body = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body);
};

const httpServer = http.createServer((req, res) => {
    if (req.url !== '/api/mcp' && req.url !== '/mcp') return send(res, 404, { error: 'not_found' });
    if (req.headers.authorization !== `Bearer ${key}`)
        return send(res, 401, { jsonrpc: '2.0', error: { code: -32001, message: 'unauthorized' }, id: null }, { 'www-authenticate': 'Bearer' });
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
        try {
            const headers = new Headers();
            for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
            const body = req.method === 'POST' ? Buffer.concat(chunks) : undefined;
            const response = await handler.fetch(new Request(`http://127.0.0.1:${port}${req.url}`, { method: req.method, headers, body }));
            const out = Buffer.from(await response.arrayBuffer());
            const h = {};
            response.headers.forEach((v, k) => (h[k] = v));
            h['content-length'] = out.length;
            res.writeHead(response.status, h);
            res.end(out);
        } catch (e) {
            console.error('bench-peer2:', e);
            if (!res.headersSent) send(res, 500, { jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
        }
    });
});
httpServer.keepAliveTimeout = 60000;
httpServer.listen(port, '127.0.0.1', () => console.log(`bench-peer2: listening on ${port}`));
process.on('SIGTERM', () => process.exit(0));
