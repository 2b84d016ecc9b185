// Drives /dashboard in Debian's Chromium through playwright-core; steered by test_dashboard.py.
//
// Protocol (one JSON object per line): prints {"event":"ready","tiles":{...},"banner":...,
// "top_agents":[names]} once logged in with the KPI tiles and the top agents loaded (or the
// "analytics unavailable" banner shown) and the live stream connected; then reads
// {"order":"#123","unattributed":"#122"} on stdin (sent right after the ingress accepted #123;
// #122 came before the page opened and cited a bot's click), waits until the
// live feed shows the order and — when the analytics answered — the conversions tile changed,
// then clicks the order in the feed and in the "recent orders" table, and the unattributed one in
// the table, and reads the explanation dialog each time (`explain_feed`, `explain_table`,
// `explain_unattributed`: its order, status line, winner, text and rejected candidates' codes),
// saves a screenshot and prints {"event":"result", ...}. Any failure
// prints {"event":"error", ...} and exits 1.
//
// Environment: BASE_URL, COMPANY, EMAIL, PASSWORD, SCREENSHOT, DEADLINE_MS (default 2000),
// CHROMIUM (default /usr/bin/chromium).
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = process.env;
const deadline = Number(env.DEADLINE_MS || 2000);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function banner(page) {
  return page.$eval("#analytics-error", (n) => (n.hidden ? null : n.textContent));
}

// Click `selector` and read the explanation dialog once it shows `order`.
async function explain(page, selector, order) {
  await page.click(selector);
  await page.waitForSelector(`#explain[open][data-order="${order}"]`, { timeout: 10000 });
  const read = await page.$eval("#explain", (d) => ({
    order: d.dataset.order,
    status: d.querySelector("#explain-status").textContent,
    winner: d.querySelector("#explain-winner").textContent,
    text: d.querySelector("#explain-text").textContent,
    rejected: [...d.querySelectorAll("#explain-rejected tbody tr[data-code]")].map((r) => r.dataset.code),
    error: d.querySelector("#explain-error").textContent,
  }));
  return read;
}

async function tiles(page) {
  return page.$$eval(".tile", (nodes) =>
    Object.fromEntries(nodes.map((n) => [n.dataset.kpi, n.querySelector(".value").textContent])));
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let page;
const consoleErrors = [];
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (msg) => { if (msg.type() === "error") consoleErrors.push(msg.text()); });
  page.on("pageerror", (err) => consoleErrors.push(String(err)));

  await page.goto(`${env.BASE_URL}/dashboard`);
  await page.fill("#company", env.COMPANY);
  await page.fill("#email", env.EMAIL);
  await page.fill("#password", env.PASSWORD);
  await page.click("#login-form button[type=submit]");
  // Logged in, tiles and top agents loaded from /v1/analytics (or its absence reported), live
  // stream connected.
  await page.waitForFunction(() =>
    ((document.querySelector('.tile[data-kpi="conversions"] .value').textContent !== "–" &&
      document.querySelector("#top-agents tbody tr")) ||
     !document.querySelector("#analytics-error").hidden) &&
    document.querySelector("#live-status").textContent === "live", null, { timeout: 30000 });
  const before = await tiles(page);
  const analytics = (await banner(page)) === null;
  const topAgents = await page.$$eval("#top-agents tbody tr td:first-child",
    (cells) => cells.map((c) => c.textContent));
  out({ event: "ready", tiles: before, banner: await banner(page), top_agents: topAgents });

  const { value: line } = await lines.next();
  const { order, unattributed } = JSON.parse(line);
  const started = Date.now();
  await page.waitForSelector(`#feed li[data-order="${order}"]`, { timeout: deadline });
  const feedMs = Date.now() - started;
  let tilesMs = null;
  if (analytics) {
    await page.waitForFunction((old) =>
      document.querySelector('.tile[data-kpi="conversions"] .value').textContent !== old,
      before.conversions, { timeout: Math.max(1, deadline - (Date.now() - started)) });
    tilesMs = Date.now() - started;
  }
  const after = await tiles(page);
  const feed = await page.$$eval("#feed li", (nodes) => nodes.map((n) => n.textContent));
  await page.waitForTimeout(1500); // let the tile highlight fade for a calm screenshot
  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });

  // Click-to-explain: the order in the live feed, then in the recent orders table (refreshed
  // with the analytics after the order arrived).
  const explainFeed = await explain(page, `#feed li[data-order="${order}"]`, order);
  await page.click("#explain-close");
  await page.waitForSelector(`#recent-orders tbody tr[data-order="${order}"]`, { timeout: 10000 });
  const recentOrders = await page.$$eval("#recent-orders tbody tr",
    (rows) => rows.map((r) => r.textContent));
  const explainTable = await explain(page, `#recent-orders tbody tr[data-order="${order}"]`, order);
  await page.screenshot({ path: env.SCREENSHOT.replace(/\.png$/, "-explain.png"), fullPage: true });
  await page.click("#explain-close");
  const explainUnattributed = await explain(
    page, `#recent-orders tbody tr[data-order="${unattributed}"]`, unattributed);
  out({ event: "result", feed_ms: feedMs, tiles_ms: tilesMs, before, after, feed,
        banner: await banner(page), console_errors: consoleErrors, explain_feed: explainFeed,
        explain_table: explainTable, explain_unattributed: explainUnattributed,
        recent_orders: recentOrders });
} catch (err) {
  if (page) await page.screenshot({ path: env.SCREENSHOT, fullPage: true }).catch(() => {});
  const state = page ? await tiles(page).catch(() => null) : null;
  out({ event: "error", error: String(err), tiles: state, console_errors: consoleErrors });
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
