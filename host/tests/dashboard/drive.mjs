// Drives headless Chromium through the DevTools protocol, without npm packages (Node's
// built-in WebSocket, behind --experimental-websocket on Node 20).
//
//   node --experimental-websocket drive.mjs <chromium> <steps.json>
//
// steps.json is a list of steps, run in order:
//   {"goto": url}                     navigate and wait until the page says it rendered
//   {"wait": js, "timeout_ms": n}     poll a JavaScript expression until it is truthy
//   {"click": css}                    click the element's centre with the mouse
//   {"screenshot": file}              save a PNG of the 1366x900 viewport
// Prints {"ok": true} or {"ok": false, "step": i, "error": ..., "text": <page text>}.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [chromium, stepsFile] = process.argv.slice(2);
const steps = JSON.parse(readFileSync(stepsFile, "utf8"));
const profile = mkdtempSync(join(tmpdir(), "absurd-dashboard-"));
const browser = spawn(
  chromium,
  [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1366,900",
    `--user-data-dir=${profile}`,
    "--remote-debugging-port=0",
    "about:blank",
  ],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let browserLog = "";
browser.stderr.on("data", (d) => (browserLog += d));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function finish(out) {
  process.stdout.write(JSON.stringify(out) + "\n");
  browser.kill("SIGKILL");
  try {
    rmSync(profile, { recursive: true, force: true });
  } catch (_) {}
  process.exit(out.ok ? 0 : 1);
}

setTimeout(() => finish({ ok: false, error: "driver timed out after 45 s", log: browserLog.slice(-2000) }), 45000);

async function devtoolsPort() {
  const file = join(profile, "DevToolsActivePort");
  for (let i = 0; i < 300; i++) {
    if (existsSync(file)) {
      const port = readFileSync(file, "utf8").split("\n")[0].trim();
      if (port) return port;
    }
    await sleep(50);
  }
  throw new Error(`Chromium did not open its DevTools port: ${browserLog.slice(-2000)}`);
}

async function connect() {
  const port = await devtoolsPort();
  let target;
  for (let i = 0; i < 100 && !target; i++) {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    target = list.find((t) => t.type === "page");
    if (!target) await sleep(50);
  }
  if (!target) throw new Error("no page target");
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("cannot connect to the DevTools WebSocket"));
  });
  let next = 1;
  const pending = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${msg.error.message} ${msg.error.data || ""}`));
      else resolve(msg.result);
    }
  };
  return (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
}

async function main() {
  const send = await connect();
  const evaluate = async (expression) => {
    const r = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description || r.exceptionDetails.text}`);
    return r.result.value;
  };
  const wait = async (expression, timeoutMs = 10000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let v = null;
      try {
        v = await evaluate(expression);
      } catch (_) {
        v = null;
      }
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${expression}`);
      await sleep(100);
    }
  };
  await send("Page.enable");
  await send("Runtime.enable");
  await send("Emulation.setDeviceMetricsOverride", { width: 1366, height: 900, deviceScaleFactor: 1, mobile: false });
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    try {
      if (s.goto) {
        await evaluate("document.body && (document.body.dataset.ready = '')").catch(() => null);
        await send("Page.navigate", { url: s.goto });
        await wait(`location.href === ${JSON.stringify(s.goto)} && document.readyState === 'complete' && !!document.body.dataset.ready`, 15000);
      } else if (s.wait) {
        await wait(s.wait, s.timeout_ms || 10000);
      } else if (s.click) {
        const sel = JSON.stringify(s.click);
        await wait(`!!document.querySelector(${sel})`);
        const box = await evaluate(`(() => { const e = document.querySelector(${sel}); e.scrollIntoView({block: "center"}); const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()`);
        for (const type of ["mousePressed", "mouseReleased"]) {
          await send("Input.dispatchMouseEvent", { type, x: box.x, y: box.y, button: "left", clickCount: 1 });
        }
      } else if (s.screenshot) {
        await evaluate("window.scrollTo(0, 0)");
        const shot = await send("Page.captureScreenshot", { format: "png" });
        writeFileSync(s.screenshot, Buffer.from(shot.data, "base64"));
      } else {
        throw new Error(`unknown step ${JSON.stringify(s)}`);
      }
    } catch (e) {
      const text = await evaluate("document.body ? document.body.innerText : ''").catch(() => "");
      finish({ ok: false, step: i, error: String(e.message || e), text });
      return;
    }
  }
  finish({ ok: true });
}

main().catch((e) => finish({ ok: false, error: String(e.stack || e), log: browserLog.slice(-2000) }));
