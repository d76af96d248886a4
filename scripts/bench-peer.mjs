// The comparison peer of scripts/bench: alyd's sites.list written with the
// official MCP TypeScript SDK (@modelcontextprotocol/sdk, McpServer +
// StreamableHTTPServerTransport), stateless (sessionIdGenerator undefined) with
// JSON responses (enableJsonResponse), over HTTP/1.1 on node:http.
//
//   node scripts/bench-peer.mjs --port N --sites FILE --key KEY [--cluster [N]]
//
// FILE holds the structuredContent alyd returns for sites.list (scripts/bench
// fetches it from alyd once); the tool serves it from memory as
// structuredContent plus the same JSON as text, as alyd does.  The tool has the
// same input and output schemas as alyd's (zod), so the SDK validates the
// arguments and the result as it does for any tool.  The SDK's documented
// stateless pattern is one McpServer and one transport per request (a stateless
// transport refuses reuse); that is what this does.  The bearer token is checked
// against KEY (401 otherwise).  --cluster forks one worker per CPU (or N) with
// node:cluster, all sharing the port.
//
// The SDK is found in BENCH_NODE_MODULES (default: build/node/node_modules,
// where scripts/install-node puts it).
import cluster from 'node:cluster';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, def) => {
    const i = args.indexOf(name);
    if (i < 0) return def;
    const v = args[i + 1];
    return v === undefined || v.startsWith('--') ? true : v;
};
const port = Number(opt('--port', 0));
const sitesFile = opt('--sites');
const key = opt('--key');
const clusterOpt = opt('--cluster', false);
if (!port || !sitesFile || !key) {
    console.error('usage: bench-peer.mjs --port N --sites FILE --key KEY [--cluster [N]]');
    process.exit(2);
}

if (clusterOpt && cluster.isPrimary) {
    const n = clusterOpt === true ? os.availableParallelism() : Number(clusterOpt);
    for (let i = 0; i < n; i++) cluster.fork();
    let ready = 0;
    cluster.on('message', (w, m) => {
        if (m === 'listening' && ++ready === n) console.log(`bench-peer: cluster of ${n} listening on ${port}`);
    });
    cluster.on('exit', (w, code, sig) => {
        console.error(`bench-peer: worker ${w.process.pid} died (${sig || code})`);
    });
    const stop = () => {
        for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
        process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
} else {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const nm = process.env.BENCH_NODE_MODULES || path.join(here, '..', 'build', 'node', 'node_modules');
    const load = (p) => import(pathToFileURL(path.join(nm, p)).href);
    const { McpServer } = await load('@modelcontextprotocol/sdk/dist/esm/server/mcp.js');
    const { StreamableHTTPServerTransport } = await load('@modelcontextprotocol/sdk/dist/esm/server/streamableHttp.js');
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

    const newServer = () => {
        const server = new McpServer({ name: 'bench-peer', version: '1.0.0' });
        server.registerTool(
            'sites.list',
            {
                title: 'List sites',
                description: 'List the sites (online shops) of this workspace.',
                inputSchema: {
                    limit: z.number().int().min(1).max(100).optional(),
                    cursor: z.string().optional(),
                },
                outputSchema: { sites: z.array(site), next_cursor: z.string().nullable() },
                annotations: { readOnlyHint: true, idempotentHint: true },
            },
            async () => ({
                content: [{ type: 'text', text: JSON.stringify(sites) }],
                structuredContent: sites,
            }),
        );
        return server;
    };

    const sendJson = (res, status, obj, extra = {}) => {
        const body = JSON.stringify(obj);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra });
        res.end(body);
    };

    const httpServer = http.createServer((req, res) => {
        if (req.url !== '/api/mcp' && req.url !== '/mcp') return sendJson(res, 404, { error: 'not_found' });
        if (req.method !== 'POST') return sendJson(res, 405, { jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed.' }, id: null }, { allow: 'POST' });
        if (req.headers.authorization !== `Bearer ${key}`)
            return sendJson(res, 401, { jsonrpc: '2.0', error: { code: -32001, message: 'unauthorized' }, id: null }, { 'www-authenticate': 'Bearer' });
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', async () => {
            let body;
            try {
                body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
                return sendJson(res, 400, { jsonrpc: '2.0', error: { code: -32700, message: 'Parse error' }, id: null });
            }
            const server = newServer();
            const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
            res.on('close', () => {
                transport.close();
                server.close();
            });
            try {
                await server.connect(transport);
                await transport.handleRequest(req, res, body);
            } catch (e) {
                console.error('bench-peer:', e);
                if (!res.headersSent) sendJson(res, 500, { jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null });
            }
        });
    });
    httpServer.keepAliveTimeout = 60000;
    httpServer.listen(port, '127.0.0.1', () => {
        if (cluster.isWorker) process.send('listening');
        else console.log(`bench-peer: listening on ${port}`);
    });
    process.on('SIGTERM', () => process.exit(0));
}
