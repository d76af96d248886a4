// An MCP application built on the official TypeScript SDK that connects to
// alyd with OAuth only: no key anywhere.  The SDK does the work (discovery from
// the 401, RFC 9728 and RFC 8414 metadata, registration by DCR or a client-ID
// metadata document, PKCE, the token request, refresh on a later 401); this
// file is the application's OAuthClientProvider, whose "browser" step is the
// person in oauth-consent.mjs signing in and approving.
//   node oauth-sdk-client.mjs v1|v2 URL OPTIONS_JSON
// OPTIONS: {email, password, redirectUrl, clientMetadataUrl?, offlineAccess?, modern?,
//   calls: [{name, arguments}], later: [{name, arguments}]?}
// With `later`, after the first calls it prints {"phase":"connected"} and waits
// for a line on stdin (the test moves alyd's clock past the access token's
// expiry meanwhile), then makes the later calls on the same client.  Prints one
// JSON object: the registrations, consents, saved tokens, tools and results --
// or {"error": message} and exit status 1.
import { randomBytes } from "node:crypto";
import { consent } from "./oauth-consent.mjs";

const [sdk, url, optText] = process.argv.slice(2);
const o = JSON.parse(optText || "{}");
const out = { sdk, registrations: [], consents: [], tokens: [], invalidated: [], results: [], later: [] };

let Client, Transport;
if (sdk === "v1") {
  ({ Client } = await import("@modelcontextprotocol/sdk/client/index.js"));
  ({ StreamableHTTPClientTransport: Transport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js"));
} else {
  ({ Client, StreamableHTTPClientTransport: Transport } = await import("@modelcontextprotocol/client"));
}

class Provider {
  constructor() {
    this.expectedState = randomBytes(16).toString("base64url");
    if (o.clientMetadataUrl) this.clientMetadataUrl = o.clientMetadataUrl;
  }
  get redirectUrl() {
    return o.redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: `alyd e2e (TypeScript SDK ${sdk})`,
      redirect_uris: [o.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      application_type: "native",
    };
  }
  state() {
    return this.expectedState;
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
    out.registrations.push(info);
  }
  tokens() {
    return this.saved;
  }
  saveTokens(t) {
    this.saved = t;
    out.tokens.push(t);
  }
  saveCodeVerifier(v) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  // v2 checks on the callback leg that the code comes from the authorization server it discovered.
  saveDiscoveryState(state) {
    this.discovery = state;
  }
  discoveryState() {
    return this.discovery;
  }
  invalidateCredentials(scope) {
    out.invalidated.push(scope);
  }
  async redirectToAuthorization(authorizationUrl) {
    const u = new URL(authorizationUrl);
    // An application that wants to stay connected asks for it, as mcp-remote does: the v1 SDK
    // requests the resource's scopes only, and refresh tokens come with offline_access.
    if (o.offlineAccess) {
      const s = (u.searchParams.get("scope") || "").split(" ").filter(Boolean);
      if (!s.includes("offline_access")) u.searchParams.set("scope", [...s, "offline_access"].join(" "));
    }
    const r = await consent(u, { email: o.email, password: o.password });
    out.consents.push({ url: String(u), status: r.status, params: r.params, error: r.error, granted: r.granted });
    this.callback = r.params;
  }
}

const provider = new Provider();

// v2 speaks the legacy era by default; {"modern": true} pins it to 2026-07-28 (no session, every request authenticated).
const newClient = () =>
  o.modern
    ? new Client({ name: `alyd-oauth-e2e-${sdk}`, version: "1.0.0" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } })
    : new Client({ name: `alyd-oauth-e2e-${sdk}`, version: "1.0.0" });

async function connect() {
  const transport = new Transport(new URL(url), { authProvider: provider });
  const client = newClient();
  try {
    await client.connect(transport);
    return { client, transport };
  } catch (e) {
    const cb = provider.callback;
    if (!cb) throw e;
    provider.callback = undefined;
    if (cb.error) throw new Error(`authorization refused: ${cb.error}`);
    if (cb.state !== provider.expectedState) throw new Error(`state came back as ${cb.state}`);
    if (sdk === "v1") await transport.finishAuth(cb.code);
    else await transport.finishAuth(new URLSearchParams(cb));
  }
  const transport2 = new Transport(new URL(url), { authProvider: provider });
  const client2 = newClient();
  await client2.connect(transport2);
  return { client: client2, transport: transport2 };
}

const nextLine = () => new Promise((resolve) => process.stdin.once("data", (d) => resolve(String(d))));

try {
  const { client } = await connect();
  out.serverInfo = client.getServerVersion();
  if (client.getNegotiatedProtocolVersion) out.protocolVersion = client.getNegotiatedProtocolVersion();
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  for (const c of o.calls ?? []) out.results.push(await client.callTool({ name: c.name, arguments: c.arguments || {} }));
  if (o.later) {
    console.log(JSON.stringify({ phase: "connected" }));
    await nextLine();
    for (const c of o.later) out.later.push(await client.callTool({ name: c.name, arguments: c.arguments || {} }));
  }
  await client.close();
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  out.error = String(e?.message ?? e);
  console.log(JSON.stringify(out));
  process.exit(1);
}
