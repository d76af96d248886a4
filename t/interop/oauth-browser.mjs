// alyd's consent page in a real browser: Debian's headless Chromium driven by
// playwright-core.  A person signs in, unticks a scope and presses Allow (and,
// in a second visit, Deny); the browser follows alyd's redirect to a callback
// server this script runs, which is where the code arrives.  Both visits share
// one browser profile, so the second shows whether the sign-in cookie held.  Every console
// message is kept, so the test can see that the page rendered under its own
// Content-Security-Policy without a violation -- and, as a control, that a
// page carrying the same policy plus an inline script does produce one (the
// check can fail).
//   node oauth-browser.mjs OPTIONS_JSON
// OPTIONS: {chromium, callbackPort, approveUrl, denyUrl, email, password,
//   untick: scope, screenshot?: path}.  Prints one JSON object.
import http from "node:http";
import { chromium } from "playwright-core";

const o = JSON.parse(process.argv[2]);
const out = { visits: {} };
let probeCsp = "";

// The client's redirect URI: it shows what it got, as a real client's page would.
const callbacks = [];
const server = http.createServer((req, res) => {
  const u = new URL(req.url, `http://127.0.0.1:${o.callbackPort}`);
  if (u.pathname === "/csp-probe") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": probeCsp });
    res.end('<!DOCTYPE html><title>probe</title><script>document.title = "ran";</script><p>probe</p>');
    return;
  }
  if (u.pathname !== "/callback") {
    res.writeHead(404);
    res.end();
    return;
  }
  callbacks.push(req.url);
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end("<!DOCTYPE html><title>callback</title><p>signed in</p>");
});
await new Promise((resolve) => server.listen(o.callbackPort, "127.0.0.1", resolve));

const isViolation = (m) => /Content Security Policy|Refused to (load|execute|apply|frame|connect)/i.test(m.text);

async function visit(context, name, url, action) {
  const page = await context.newPage();
  const v = { console: [], requests: [] };
  out.visits[name] = v;
  page.on("console", (m) => v.console.push({ type: m.type(), text: m.text(), url: m.location()?.url }));
  page.on("pageerror", (err) => v.console.push({ type: "pageerror", text: String(err) }));
  page.on("request", (r) => v.requests.push(r.url()));
  const res = await page.goto(url);
  v.status = res.status();
  v.headers = res.headers();
  v.title = await page.title();
  v.heading = await page.textContent("h1");
  v.fields = await page.$$eval("form input", (els) => els.map((e) => ({ name: e.name, type: e.type, checked: e.checked })));
  if (await page.$('input[name="email"]')) {
    await page.fill('input[name="email"]', o.email);
    await page.fill('input[name="password"]', o.password);
  }
  if (action === "approve" && o.untick) await page.uncheck(`input[name="scope"][value="${o.untick}"]`);
  if (o.screenshot && action === "approve") await page.screenshot({ path: o.screenshot, fullPage: true });
  const landed = page.waitForURL(`http://127.0.0.1:${o.callbackPort}/**`, { timeout: 20000 });
  await page.click(`button[name="action"][value="${action}"]`);
  await landed;
  v.landed = page.url();
  v.landedText = await page.textContent("p");
  v.violations = v.console.filter(isViolation).map((m) => m.text);
  await page.close();
}

const browser = await chromium.launch({ executablePath: o.chromium, args: ["--no-sandbox"] });
try {
  // One browser profile for both visits: the second finds the person still signed in.
  const person = await browser.newContext();
  await visit(person, "approve", o.approveUrl, "approve");
  await visit(person, "deny", o.denyUrl, "deny");
  await person.close();
  // The control: alyd's own policy on a page that breaks it.
  probeCsp = out.visits.approve.headers["content-security-policy"] || "";
  const context = await browser.newContext();
  const page = await context.newPage();
  const probe = { console: [] };
  page.on("console", (m) => probe.console.push({ type: m.type(), text: m.text() }));
  await page.goto(`http://127.0.0.1:${o.callbackPort}/csp-probe`);
  await page.waitForTimeout(200);
  probe.title = await page.title();
  probe.violations = probe.console.filter(isViolation).map((m) => m.text);
  out.probe = probe;
  await context.close();
  out.callbacks = callbacks;
} catch (e) {
  out.error = String(e?.stack ?? e);
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
