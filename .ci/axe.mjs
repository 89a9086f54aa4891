// axe-core over the sidecar's pages in headless Chromium: the sign-in page, the
// dashboard, and every tick page it links to, at 1280 px and 390 px, light and dark.
// Exits 1 on any serious or critical violation. Usage: node axe.mjs BASE TOKEN AXE_JS
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { chromium } = require("playwright-core");

const [base, token, axePath] = process.argv.slice(2);
const axeSource = readFileSync(axePath, "utf8");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
let failures = 0;
let checked = 0;

async function audit(page, what) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  checked += 1;
  for (const v of bad) {
    failures += 1;
    console.log(`${what}: ${v.impact} ${v.id}: ${v.help}`);
    for (const node of v.nodes.slice(0, 3)) console.log(`    ${node.target.join(" ")}: ${node.failureSummary.split("\n").join(" ")}`);
  }
  const minor = result.violations.length - bad.length;
  console.log(`${what}: ${bad.length} serious or critical${minor ? `, ${minor} minor or moderate` : ""}`);
}

for (const colorScheme of ["light", "dark"]) {
  for (const width of [1280, 390]) {
    const context = await browser.newContext({ viewport: { width, height: 900 }, colorScheme });
    const page = await context.newPage();
    const at = `${width}px ${colorScheme}`;
    await page.goto(`${base}/`);
    await audit(page, `sign-in ${at}`);
    await page.fill("input[name=token]", token);
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    // The sign-in answers with a redirect; the dashboard is read once it has settled.
    await page.goto(`${base}/`, { waitUntil: "load" });
    await audit(page, `dashboard ${at}`);
    const ticks = [...new Set(await page.$$eval("a[href^='/ticks/']", (links) => links.map((a) => a.getAttribute("href"))))];
    if (ticks.length === 0) {
      console.log(`dashboard ${at}: no tick page is linked`);
      failures += 1;
    }
    for (const href of ticks.slice(0, 4)) {
      await page.goto(`${base}${href}`);
      await audit(page, `tick page ${href} ${at}`);
    }
    await context.close();
  }
}
await browser.close();
console.log(`axe-core: ${checked} page views, ${failures} serious or critical violation(s)`);
process.exit(failures === 0 ? 0 : 1);
