// The person in front of alyd's consent page, for tests that drive real OAuth
// clients: it opens the authorization URL a client produced, reads the form the
// way a browser without JavaScript would (hidden `request` and `csrf`, the
// `scope` checkboxes, the cookies the page set), signs in and presses Allow or
// Deny, and hands back where alyd redirected to.  Only the form contract is
// assumed: POST to the form's action, fields email/password/workspace/scope,
// button name="action" value approve|deny.
//
// As a module: consent(url, {email, password, action, scopes, uncheck, workspace})
//   -> {status, location, params, page}.
// As a program (a BROWSER for mcp-remote, the user of the conformance suite):
//   node oauth-consent.mjs URL
// with ALY_OAUTH_EMAIL, ALY_OAUTH_PASSWORD, ALY_OAUTH_ACTION (approve), and
// ALY_OAUTH_LOG (a file that gets one JSON line per run); it then follows the
// redirect with a GET, as the browser would, so the client's callback sees it.
import { appendFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const decodeEntities = (s) =>
  s.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos|#39);/gi, (m, e) => {
    const k = e.toLowerCase();
    if (k[0] === "#") return String.fromCodePoint(k[1] === "x" ? parseInt(k.slice(2), 16) : parseInt(k.slice(1), 10));
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" }[k] ?? m;
  });

const attr = (tag, name) => {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, "i"));
  return m ? decodeEntities(m[2] ?? m[3] ?? m[4]) : undefined;
};

// The consent form of an HTML page, or null when the page has none (an error page).
export function parseConsentPage(html) {
  const form = html.match(/<form\b[^>]*>/i);
  if (!form) return null;
  const page = {
    action: attr(form[0], "action"),
    method: (attr(form[0], "method") || "get").toLowerCase(),
    hidden: {},
    scopes: [],
    fields: [],
    buttons: [],
  };
  for (const [tag] of html.matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(tag, "name");
    const type = (attr(tag, "type") || "text").toLowerCase();
    if (name === undefined) continue;
    if (type === "hidden") page.hidden[name] = attr(tag, "value") ?? "";
    else if (type === "checkbox" && name === "scope")
      page.scopes.push({ value: attr(tag, "value"), checked: /\schecked\b/i.test(tag) });
    else page.fields.push(name);
  }
  for (const [tag] of html.matchAll(/<button\b[^>]*>/gi))
    if (attr(tag, "name") === "action") page.buttons.push(attr(tag, "value"));
  return page;
}

// A cookie jar that is just enough for one origin: name=value, attributes ignored.
function absorbCookies(jar, res) {
  for (const c of res.headers.getSetCookie?.() ?? []) {
    const [pair] = c.split(";");
    const i = pair.indexOf("=");
    if (i > 0) jar.set(pair.slice(0, i).trim(), pair.slice(i + 1).trim());
  }
}
const cookieHeader = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");

export async function consent(authorizationUrl, o = {}) {
  const jar = o.jar ?? new Map();
  const url = new URL(authorizationUrl);
  const res = await fetch(url, { redirect: "manual", headers: { Accept: "text/html" } });
  absorbCookies(jar, res);
  const html = await res.text();
  if (res.status !== 200) {
    return { status: res.status, location: res.headers.get("location"), error: `GET ${url.pathname}: ${res.status}`, body: html };
  }
  const page = parseConsentPage(html);
  if (!page || page.method !== "post") return { status: res.status, error: "no consent form on the page", body: html };
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(page.hidden)) body.append(k, v);
  if (page.fields.includes("email") && o.email !== undefined) body.append("email", o.email);
  if (page.fields.includes("password") && o.password !== undefined) body.append("password", o.password);
  if (o.workspace !== undefined) body.append("workspace", o.workspace);
  const uncheck = new Set(o.uncheck ?? []);
  const scopes = o.scopes ?? page.scopes.filter((s) => s.checked && !uncheck.has(s.value)).map((s) => s.value);
  for (const s of scopes) body.append("scope", s);
  body.append("action", o.action ?? "approve");
  const post = await fetch(new URL(page.action ?? url.pathname, url), {
    method: "POST",
    redirect: "manual",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Cookie: cookieHeader(jar), Origin: url.origin },
    body,
  });
  absorbCookies(jar, post);
  const location = post.headers.get("location");
  const out = { status: post.status, location, page, granted: scopes };
  if (location) out.params = Object.fromEntries(new URL(location).searchParams);
  else out.body = await post.text();
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const url = process.argv[2];
  const log = process.env.ALY_OAUTH_LOG;
  let rec;
  try {
    rec = await consent(url, {
      email: process.env.ALY_OAUTH_EMAIL,
      password: process.env.ALY_OAUTH_PASSWORD,
      action: process.env.ALY_OAUTH_ACTION || "approve",
    });
    rec.url = url;
    if (rec.location) {
      // The browser lands on the client's callback; its answer is the client's business.
      const cb = await fetch(rec.location, { redirect: "manual" });
      rec.callbackStatus = cb.status;
      await cb.text();
    }
  } catch (e) {
    // fetch's own message is "fetch failed"; what failed (refused, reset, a timeout) is in its cause.
    rec = { url, error: String(e?.message ?? e), cause: e?.cause ? String(e.cause?.code ?? "") + " " + String(e.cause?.message ?? e.cause) : undefined };
  }
  delete rec.page;
  if (log) appendFileSync(log, JSON.stringify(rec) + "\n");
  else console.log(JSON.stringify(rec));
  process.exit(rec.error ? 1 : 0);
}
