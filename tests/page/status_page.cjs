// Drives the status page in a real headless Chromium (Debian's, through playwright-core):
// waits until both node processes show alive with their bees and the query shows, takes a
// screenshot, stops one node, and waits — on the same page, no reload — until it no longer
// shows alive. Prints what it saw as one JSON line; exits non-zero when anything is missing.
//
//   NODE_PATH=… node status_page.cjs URL PID_OF_B NODE_A NODE_B SQL SCREENSHOT.png
"use strict";
// CommonJS, so that NODE_PATH (the test script's cache of playwright-core) resolves it.
const { chromium } = require("playwright-core");

async function main() {
  const [url, pidB, nodeA, nodeB, sql, png] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.APIARY_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    await page.goto(url);
    const rowOf = (node) => page.locator("#swarm tr", { hasText: node });
    for (const n of [nodeA, nodeB]) {
      await rowOf(n).locator("td.alive").waitFor({ timeout: 30000 });
    }
    await page.locator("#queries code", { hasText: sql }).first().waitFor({ timeout: 30000 });
    const bees = async (n) => (await rowOf(n).locator("td").nth(2).textContent()).trim();
    const seen = { beesA: await bees(nodeA), beesB: await bees(nodeB) };
    seen.query = (await page.locator("#queries tr", { hasText: sql }).first().textContent()).trim();
    await page.screenshot({ path: png, fullPage: true });
    const loads = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    process.kill(Number(pidB), "SIGTERM");
    await page.waitForFunction(
      (n) => ![...document.querySelectorAll("#swarm tr")].some(
        (tr) => tr.textContent.includes(n) && tr.querySelector("td.alive")),
      nodeB,
      { timeout: 30000, polling: 200 },
    );
    seen.stillAliveA = (await rowOf(nodeA).locator("td.alive").count()) === 1;
    seen.navigations = loads;
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
