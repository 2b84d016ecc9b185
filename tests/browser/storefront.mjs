// A shopper on a storefront with the refstream snippet, in Debian's Chromium through
// playwright-core; steered by test_storefront_snippet.py.
//
// Opens PAGE_URL (a shop page, e.g. https://SHOP/collections/office?ref=CODE; HOST_RULES maps the
// shop's domain to the local storefront), waits for the snippet (window.refstream.ready), reads
// the cart (/cart.js), adds a product (/cart/add.js), opens a second page of the shop without
// ?ref and reads the ids again. Prints one JSON line: {"event":"result", ids, ids_later, cart,
// cookies, clicks: [answers of the ingress's /v1/clicks], failed: [requests that failed],
// console_errors}; or {"event":"error", ...} and exits 1.
//
// Environment: PAGE_URL, HOST_RULES, SCREENSHOT, CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const env = process.env;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
// A shopper's desktop Chrome: headless Chromium's own User-Agent is (rightly) flagged as a bot.
const USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) " +
  "Chrome/131.0.0.0 Safari/537.36";

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         `--host-resolver-rules=${env.HOST_RULES}`],
});
let page;
const consoleErrors = [];
const clicks = [];
const failed = [];
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, userAgent: USER_AGENT });
  page = await context.newPage();
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => consoleErrors.push(String(err)));
  page.on("response", async (response) => {
    if (!response.url().endsWith("/v1/clicks")) return;
    const request = response.request();
    clicks.push({ method: request.method(), status: response.status(),
                  request_headers: await request.allHeaders(),
                  headers: await response.allHeaders(), body: request.postData() });
  });
  page.on("requestfailed", (request) =>
    failed.push({ url: request.url(), error: request.failure()?.errorText }));

  const ready = () => page.waitForFunction(() => window.refstream && window.refstream.ready,
                                           null, { timeout: 15000 })
    .then(() => page.evaluate(() => window.refstream.ready));
  await page.goto(env.PAGE_URL); // a shop page, or a referral link that redirects to one
  const landed = page.url();
  const ids = await ready();
  const cart = await page.evaluate(() => fetch("/cart.js").then((r) => r.json()));
  await page.evaluate(() => fetch("/cart/add.js", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ items: [{ id: 41001, quantity: 1 }] }),
  }).then((r) => r.json()));

  await page.goto(new URL("/products/standing-desk", landed).href);
  const idsLater = await ready();
  const cartLater = await page.evaluate(() => fetch("/cart.js").then((r) => r.json()));
  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
  out({ event: "result", ids, ids_later: idsLater, cart, cart_later: cartLater,
        cookies: await context.cookies(), clicks, failed, console_errors: consoleErrors,
        landed });
} catch (err) {
  if (page) await page.screenshot({ path: env.SCREENSHOT, fullPage: true }).catch(() => {});
  out({ event: "error", error: String(err), clicks, failed, console_errors: consoleErrors });
  process.exitCode = 1;
} finally {
  await browser.close();
}
