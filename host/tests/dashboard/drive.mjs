// Drives Debian's headless Chromium through Playwright (`playwright-core`, pinned in
// package-lock.json beside this file; scripts/setup-browser installs it and the browser).
//
//   node drive.mjs <chromium> <steps.json> <failure.png>
//
// steps.json is a list of steps, run in order in one page:
//   {"goto": url}                     navigate and wait until the page says it rendered
//   {"wait": js, "timeout_ms": n}     wait until a JavaScript expression is truthy (an
//                                     expression that throws counts as false)
//   {"click": css}                    click the element once it is visible, stable and enabled
//   {"fill": css, "text": s}          focus the input and replace its value with `s`
//   {"screenshot": file}              save a PNG of the 1366x900 viewport, scrolled to the top
// Prints one line, {"ok": true} or {"ok": false, "step": i, "error": ..., "url": ...,
// "text": <page text>}, and on failure saves a screenshot of the page as <failure.png>.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [executablePath, stepsFile, failureShot] = process.argv.slice(2);
const steps = JSON.parse(readFileSync(stepsFile, "utf8"));
const WAIT_MS = 10000;
const NAVIGATE_MS = 15000;

let browser;
function finish(out) {
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(out.ok ? 0 : 1);
}
// A bound on the whole run, whatever hangs.
setTimeout(() => finish({ ok: false, error: "driver timed out after 120 s" }), 120000).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls the expression until it is truthy. Not `page.waitForFunction`: that evaluates a string
// with `eval` inside the page, which the dashboard's Content-Security-Policy forbids, while
// `page.evaluate` of a string goes through the DevTools protocol and the CSP stays in force.
async function waitFor(page, js, timeoutMs) {
  const predicate = `(() => { try { return !!(${js}); } catch (_) { return false; } })()`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Evaluating can fail while a navigation replaces the document: try again.
    if (await page.evaluate(predicate).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${js}`);
    await sleep(100);
  }
}

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      // Tests run as root on CI, where Chromium's sandbox cannot start.
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--hide-scrollbars",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    try {
      if (s.goto) {
        // A navigation that only changes the hash keeps the page: clear its "rendered" mark.
        await page.evaluate(() => document.body && (document.body.dataset.ready = "")).catch(() => null);
        await page.goto(s.goto, { timeout: NAVIGATE_MS });
        const rendered = `location.href === ${JSON.stringify(s.goto)} && document.readyState === 'complete' && !!document.body.dataset.ready`;
        await waitFor(page, rendered, NAVIGATE_MS);
      } else if (s.wait) {
        await waitFor(page, s.wait, s.timeout_ms || WAIT_MS);
      } else if (s.click) {
        await page.click(s.click, { timeout: WAIT_MS });
      } else if (s.fill) {
        await page.fill(s.fill, s.text, { timeout: WAIT_MS });
      } else if (s.screenshot) {
        await page.evaluate(() => window.scrollTo(0, 0));
        await page.screenshot({ path: s.screenshot });
      } else {
        throw new Error(`unknown step ${JSON.stringify(s)}`);
      }
    } catch (e) {
      const text = await page.evaluate(() => (document.body ? document.body.innerText : "")).catch(() => "");
      await page.screenshot({ path: failureShot }).catch(() => null);
      await browser.close().catch(() => null);
      finish({ ok: false, step: i, error: String(e.message || e), text, url: page.url() });
      return;
    }
  }
  await browser.close();
  finish({ ok: true });
}

main().catch(async (e) => {
  if (browser) await browser.close().catch(() => null);
  finish({ ok: false, error: String(e.stack || e) });
});
