// End-to-end test of the dashboard: a real host at BASE_URL, its page at `/` in headless Chromium
// (Debian's, driven by playwright-core). Run by scripts/browser-test.sh, or by hand:
//   BASE_URL=http://127.0.0.1:8080 node tests/browser/dashboard.test.mjs
// The host must run with http-spawn.toml's workers (`default` and `report`: four steps a second).
// Bounded: every wait has a timeout and the whole run gives up after 140 s. Exits non-zero on
// any failed check, any uncaught page error and any console error.

import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE_URL = (process.env.BASE_URL ?? "").replace(/\/+$/, "");
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR || "target/browser";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 15_000;
const OVERALL_MS = 140_000;
// Without the background-networking flags Chromium keeps dialling out, which this closed
// network refuses.
const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

if (!BASE_URL) {
  console.error("BASE_URL is not set (for example http://127.0.0.1:8080)");
  process.exit(2);
}

let browser;
const overall = setTimeout(async () => {
  console.error(`not ok - the whole run took over ${OVERALL_MS / 1000} s`);
  await Promise.race([browser?.close(), new Promise((done) => setTimeout(done, 3000))]);
  process.exit(1);
}, OVERALL_MS);

const PID = /^[0-9a-f]{8}-[0-9a-f]+$/;
const testid = (id) => `[data-testid="${id}"]`;
const runningRow = (pid) => `${testid("running-row")}[data-pid="${pid}"]`;
const exitRow = (pid) => `${testid("exit-row")}[data-pid="${pid}"]`;

/** Console errors to let pass while an expected HTTP error is shown (Chromium logs those). */
const allowedConsole = [];
const pageErrors = [];
let passed = 0;

async function check(name, body) {
  try {
    await body();
  } catch (error) {
    console.error(`not ok - ${name}\n${error.stack ?? error}`);
    if (pageErrors.length) console.error(`# page errors so far:\n${pageErrors.join("\n")}`);
    throw Object.assign(error, { reported: true });
  }
  passed += 1;
  console.log(`ok - ${name}`);
}

/** Fills the form and submits it; the pid the page shows, or its error text. */
async function submit(page, { name, duration, payload = "", worker = "default" }) {
  await page.locator(testid("task-name")).fill(name);
  await page.locator(testid("task-worker")).selectOption(worker);
  await page.locator(testid("task-duration")).fill(String(duration));
  await page.locator(testid("task-payload")).fill(payload);
  const result = page.locator(testid("submit-result"));
  await result.evaluate((el) => { el.textContent = ""; delete el.dataset.kind; });
  await page.locator(testid("submit-button")).click();
  await page.waitForSelector(`${testid("submit-result")}[data-kind]`);
  return { pid: await result.getAttribute("data-pid"), text: await result.textContent() };
}

/** A full-page screenshot of `page` as `name` in SCREENSHOT_DIR. */
async function shoot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, name);
  // Rows skip rendering while out of view (content-visibility), and a full-page capture does
  // not scroll: make the viewport as tall as the page, and let two frames paint it.
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: 1360, height: Math.max(900, height) });
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done))));
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# screenshot: ${path.resolve(file)}`);
}

async function main() {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: WAIT_MS });
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (error) => pageErrors.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && !allowedConsole.some((re) => re.test(message.text()))) {
      pageErrors.push(`console error: ${message.text()}`);
    }
  });

  await page.goto(`${BASE_URL}/`);
  await page.waitForSelector(`${testid("link-status")}[data-state="live"]`);
  // Records every step each progress bar shows, and marks this document: a reload would lose both.
  await page.evaluate(() => {
    window.stepsSeen = {};
    const record = () => {
      for (const bar of document.querySelectorAll('[data-testid="progress-bar"]')) {
        const pid = bar.closest('[data-testid="running-row"]').dataset.pid;
        const seen = (window.stepsSeen[pid] ??= []);
        const step = Number(bar.dataset.step);
        if (seen.at(-1) !== step) seen.push(step);
      }
    };
    new MutationObserver(record).observe(document.querySelector('[data-testid="running-body"]'),
      { subtree: true, childList: true, attributes: true, attributeFilter: ["data-step"] });
  });

  let workers;
  await check("the worker select lists the host's workers, the default one chosen", async () => {
    workers = (await page.evaluate(() => fetch("/api/workers").then((res) => res.json()))).workers;
    const names = workers.map((w) => w.name);
    assert.ok(names.includes("default") && names.includes("report"), `workers: ${names}`);
    const select = page.locator(testid("task-worker"));
    await page.waitForFunction((n) => document.querySelector('[data-testid="task-worker"]').options.length === n,
      names.length);
    assert.deepEqual(await select.locator("option").evaluateAll((options) => options.map((o) => o.value)), names);
    assert.equal(await select.inputValue(), workers.find((w) => w.default).name);
  });

  await check("the workers card shows each worker's current version", async () => {
    for (const w of workers) {
      const item = page.locator(`${testid("worker-item")}[data-worker="${w.name}"]`);
      assert.equal(await item.locator(testid("worker-version")).textContent(), w.current.version);
    }
  });

  let first;
  await check("a task submitted from the form shows its pid", async () => {
    const answer = await submit(page, { name: "from-browser", duration: 3, payload: '{"exit_code": 0}' });
    assert.match(answer.pid ?? "", PID, answer.text);
    assert.ok(answer.text.includes(answer.pid), answer.text);
    first = answer.pid;
  });

  await check("its progress bar advances from the event stream", async () => {
    const bar = page.locator(`${runningRow(first)} ${testid("progress-bar")}`);
    await bar.waitFor();
    assert.equal(await bar.getAttribute("data-steps"), "3");
    await page.waitForFunction((pid) => (window.stepsSeen[pid] ?? []).some((step) => step >= 2), first);
    const seen = await page.evaluate((pid) => window.stepsSeen[pid], first);
    assert.ok(seen[0] <= 1, `first step shown: ${seen}`);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, `steps go forward: ${seen}`);
  });

  await check("a refused submission shows the host's error", async () => {
    allowedConsole.push(/status of 400/);
    const answer = await submit(page, { name: "too-long", duration: 10_000_000 });
    assert.equal(answer.pid, null);
    assert.match(answer.text, /^400 .*duration/);
    allowedConsole.pop();
  });

  await check("the kill button kills a long task", async () => {
    const answer = await submit(page, { name: "long-from-browser", duration: 60 });
    assert.match(answer.pid ?? "", PID, answer.text);
    const row = page.locator(runningRow(answer.pid));
    await row.locator(`${testid("progress-bar")}[data-step="1"]`).waitFor();
    await row.locator(testid("kill-button")).click();
    await row.waitFor({ state: "detached" });
    const exit = page.locator(exitRow(answer.pid));
    assert.equal(await exit.getAttribute("data-status"), "killed");
    assert.match(await page.locator(testid("kill-result")).textContent(), /Killed/);

    // Run again from its exit row: a new task, shown live, that names what it retries.
    await exit.locator(testid("retry-button")).click();
    const said = page.locator(`${testid("retry-result")}[data-kind="ok"]`);
    await said.waitFor();
    const retry = (await said.textContent()).match(/ as (\S+)$/)?.[1] ?? "";
    assert.match(retry, PID);
    await page.locator(runningRow(retry)).waitFor();
    const record = await page.evaluate(async (pid) => (await fetch(`/api/tasks/${pid}`)).json(), retry);
    assert.equal(record.retry_of, answer.pid);
    assert.equal(record.name, "long-from-browser");
    await page.evaluate(async (pid) => fetch(`/api/tasks/${pid}`, { method: "DELETE" }), retry);
    await page.locator(runningRow(retry)).waitFor({ state: "detached" });

    // Every failed task again, from the panel's button (none failed here: it says so).
    await page.locator(testid("retry-failed")).click();
    await page.waitForFunction(() =>
      /^Retried \d+ failed/.test(document.querySelector('[data-testid="retry-result"]').textContent));
  });

  await check("a task scheduled to run later shows as scheduled, then runs", async () => {
    const pid = await page.evaluate(async () => {
      const res = await fetch("/api/tasks", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "later-from-browser", duration: 0, delay: 2 }),
      });
      return (await res.json()).pid;
    });
    const row = page.locator(`${runningRow(pid)}[data-status="scheduled"]`);
    await row.waitFor();
    await page.locator(`${exitRow(pid)}[data-status="exited"]`).waitFor();
  });

  await check("the first task's exit row says exited with code 0", async () => {
    const exit = page.locator(`${exitRow(first)}[data-status="exited"]`);
    await exit.waitFor();
    assert.equal(await exit.locator(testid("exit-code")).textContent(), "0");
    assert.equal(await exit.locator(testid("exit-worker")).textContent(), "default");
    assert.equal(await page.locator(runningRow(first)).count(), 0);
    assert.ok(await page.evaluate(() => window.stepsSeen !== undefined), "the page was reloaded");
  });

  await check("task-provided text is shown as text, never as markup", async () => {
    const name = `<img src=x onerror="window.injected = 1">`;
    const pid = await page.evaluate(async (name) => {
      const res = await fetch("/api/tasks", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name, duration: 0 }),
      });
      return (await res.json()).pid;
    }, name);
    const exit = page.locator(exitRow(pid));
    await exit.waitFor();
    assert.equal(await exit.locator(testid("exit-name")).textContent(), name);
    assert.equal(await exit.locator(testid("exit-worker")).textContent(), "default");
    assert.equal(await page.locator(`${testid("exit-body")} img`).count(), 0);
    assert.equal(await page.evaluate(() => window.injected), undefined);
  });

  let report;
  await check("a task submitted to the report worker runs there, its bar advancing", async () => {
    const answer = await submit(page, { name: "report-from-browser", duration: 2, worker: "report" });
    assert.match(answer.pid ?? "", PID, answer.text);
    report = answer.pid;
    const row = page.locator(runningRow(report));
    await row.waitFor();
    assert.equal(await row.locator(testid("running-worker")).textContent(), "report");
    const version = workers.find((w) => w.name === "report").current.version;
    assert.match(await row.locator(testid("running-worker")).getAttribute("title"), new RegExp(version));
    // Four quarter-second steps a second: 8 steps for 2 seconds.
    await row.locator(`${testid("progress-bar")}[data-steps="8"]`).waitFor();
    await page.waitForFunction((pid) => (window.stepsSeen[pid] ?? []).some((step) => step >= 4), report);
    const seen = await page.evaluate((pid) => window.stepsSeen[pid], report);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, `steps go forward: ${seen}`);
    assert.ok(new Set(seen).size >= 3, `the bar advanced step by step: ${seen}`);
  });

  await check("the report task's exit row says worker report, exited with code 0", async () => {
    const exit = page.locator(`${exitRow(report)}[data-status="exited"]`);
    await exit.waitFor();
    assert.equal(await exit.locator(testid("exit-worker")).textContent(), "report");
    assert.equal(await exit.locator(testid("exit-name")).textContent(), "report-from-browser");
    assert.equal(await exit.locator(testid("exit-code")).textContent(), "0");
    assert.equal(await page.locator(runningRow(report)).count(), 0);
  });

  await check("a task that returns a result shows it in its exit row", async () => {
    // The kv actor (guest/kv) returns its entries as its result when its duration is up.
    const answer = await submit(page, { name: "kv-from-browser", duration: 1, worker: "kv",
      payload: '{"name": "browser-kv"}' });
    assert.ok(answer.pid, answer.text);
    const exit = page.locator(`${exitRow(answer.pid)}[data-status="exited"]`);
    await exit.waitFor();
    assert.equal(await exit.locator(testid("exit-result")).textContent(), '{"entries":{}}');
    assert.equal(await exit.locator(testid("exit-error")).count(), 0);
  });

  await check("a paused worker shows as paused, with the tasks it holds, then runs them", async () => {
    const admin = { authorization: `Bearer ${process.env.ADMIN_TOKEN}` };
    let res = await fetch(`${BASE_URL}/api/workers/report/pause`, { method: "POST", headers: admin });
    assert.equal(res.status, 200, await res.text());
    const pid = await page.evaluate(async () => {
      const res = await fetch("/api/tasks", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: "held-by-pause", duration: 1, worker: "report" }),
      });
      return (await res.json()).pid;
    });
    await page.locator(`${runningRow(pid)}[data-status="spawned"]`).waitFor();
    await page.reload();
    const tag = page.locator(`${testid("worker-item")}[data-worker="report"] ${testid("worker-paused")}`);
    await tag.waitFor();
    assert.equal(await tag.textContent(), "paused · 1 waiting");
    res = await fetch(`${BASE_URL}/api/workers/report/resume`, { method: "POST", headers: admin });
    assert.equal(res.status, 200, await res.text());
    await page.locator(`${exitRow(pid)}[data-status="exited"]`).waitFor({ timeout: WAIT_MS });
  });

  await check("a schedule shows with its cron and its next tick", async () => {
    const made = await page.evaluate(async () => (await fetch("/api/schedules", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "browser-hourly", cron: "0 * * * *", task: { name: "hourly", duration: 0 } }),
    })).status);
    assert.equal(made, 201);
    const item = page.locator(`${testid("schedule-item")}[data-schedule="browser-hourly"]`);
    await item.waitFor({ timeout: WAIT_MS });
    assert.match(await item.locator("code").textContent(), /^0 \* \* \* \*$/);
    assert.match(await item.locator(testid("schedule-next")).textContent(), /^next \d\d:00:00/);
    await page.evaluate(async () => fetch("/api/schedules/browser-hourly", { method: "DELETE" }));
  });

  await check("the totals and rates update", async () => {
    const count = (id) => page.locator(testid(id)).evaluate((el) => Number(el.textContent.replace(/\D/g, "")));
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="total-ended"]')
      .textContent.replace(/\D/g, "")) >= 4);
    assert.ok((await count("total-spawned")) >= 4);
    assert.ok((await count("total-started")) >= 4);
    assert.notEqual(await page.locator(testid("spawn-rate")).textContent(), "–");
    assert.notEqual(await page.locator(testid("sparkline-spawn")).getAttribute("points"), "");
  });

  // A few tasks of different lengths, for a screenshot that shows the page at work.
  await page.evaluate(async () => {
    const tasks = [["export", 20], ["resize-images", 12], ["q3-report", 10, undefined, "report"],
      ["nightly-report", 8, undefined, "report"], ["refused", 1, { exit_code: 3 }]];
    for (const [name, duration, payload, worker] of tasks) {
      await fetch("/api/tasks", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name, duration, payload, worker }),
      });
    }
  });
  await page.waitForSelector(`${testid("exit-row")}[data-status="exited"] .code-bad`);
  await page.waitForTimeout(1500);

  await check("the cluster panel stays hidden on a host alone", async () => {
    // Once the page has read /api/cluster and found no cluster.
    await page.locator(`${testid("cluster-panel")}[data-clustered="false"]`).waitFor({ state: "attached" });
    assert.equal(await page.locator(testid("cluster-panel")).isHidden(), true);
  });

  await check("the dashboard's screenshot is saved", async () => {
    await shoot(page, "dashboard.png");
  });

  const post = (body) => page.evaluate(async (body) => {
    const res = await fetch("/api/tasks", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    return (await res.json()).pid;
  }, body);

  let sup;
  await check("a pid links to the task's page: record, actor state and children", async () => {
    sup = await post({ name: "sup", worker: "supervisor", duration: 30, payload: {
      strategy: "one_for_one", intensity: 3, period_secs: 5, children: [{ name: "kid", duration: 30 }] } });
    assert.match(sup ?? "", PID);
    await page.setViewportSize({ width: 1360, height: 900 });
    await page.locator(`${runningRow(sup)} ${testid("pid-link")}`).click();
    await page.waitForURL(`${BASE_URL}/tasks/${sup}`);
    await page.locator(testid("task-name")).waitFor();
    assert.equal(await page.locator(testid("task-pid")).textContent(), sup);
    assert.equal(await page.locator(testid("task-name")).textContent(), "sup");
    await page.locator(`${testid("task-status")} [data-status="running"]`).waitFor();
    await page.locator(testid("actor-panel")).waitFor();
    const child = page.locator(`${testid("child-row")}`).filter({ hasText: "kid" });
    await child.waitFor();
    // The child's page names its parent, as a link back.
    const href = await child.locator(testid("pid-link")).getAttribute("href");
    await child.locator(testid("pid-link")).click();
    await page.waitForURL(`${BASE_URL}${href}`);
    await page.locator(testid("task-name")).filter({ hasText: "kid" }).waitFor();
    assert.equal(await page.locator(`${testid("task-parent")} a`).textContent(), sup);
    await page.evaluate(async (pid) => fetch(`/api/tasks/${pid}`, { method: "DELETE" }), sup);
  });

  await check("a task's page by its registered name shows it under its pid", async () => {
    const pid = await post({ name: "kv-named", worker: "kv", duration: 5, payload: { name: "page-kv" } });
    await page.waitForFunction(async () => (await fetch("/api/names/page-kv")).ok);
    await page.goto(`${BASE_URL}/tasks/name:page-kv`);
    await page.waitForURL(`${BASE_URL}/tasks/${pid}`);
    await page.locator(testid("task-name")).filter({ hasText: "kv-named" }).waitFor();
    assert.equal(await page.locator(testid("actor-name")).textContent(), "page-kv");
    await page.evaluate(async (pid) => fetch(`/api/tasks/${pid}`, { method: "DELETE" }), pid);
  });

  await check("the task page follows its log and events live until it ends", async () => {
    const pid = await post({ name: "followed", duration: 5 });
    await page.goto(`${BASE_URL}/tasks/${pid}`);
    const lines = page.locator(testid("log-line"));
    await lines.filter({ hasText: "Worker progress step=1 total=5" }).waitFor();
    await page.locator(`${testid("task-status")} [data-status="exited"]`).waitFor();
    await lines.filter({ hasText: "Worker done, exiting" }).waitFor();
    const text = await lines.allTextContents();
    for (const line of ["Worker started steps=5", "Worker progress step=1 total=5", "Worker progress step=3 total=5",
      "Worker progress step=5 total=5", "Worker done, exiting"]) {
      assert.equal(text.filter((t) => t.endsWith(line)).length, 1, `${line} once: ${text.join(" | ")}`);
    }
    assert.equal(await page.locator(testid("task-exit-code")).textContent(), "0");
    await page.locator(`${testid("event-row")}[data-kind="progress"]`).first().waitFor();
    await page.locator(`${testid("event-row")}[data-kind="exit"]`).waitFor();
    await shoot(page, "task.png");
  });

  await check("the task list filters and pages as the API does", async () => {
    const many = `many-${Date.now()}`;
    const statuses = await page.evaluate(async (name) => {
      const statuses = [];
      for (let i = 0; i < 55; i++) {
        const res = await fetch("/api/tasks", {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ name, duration: 0 }),
        });
        statuses.push(res.status);
      }
      return statuses;
    }, many);
    assert.deepEqual(new Set(statuses), new Set([202]));
    await page.goto(`${BASE_URL}/tasks?name=${many}`);
    const rows = page.locator(testid("list-row"));
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="list-row"]').length === 50);
    await page.locator(testid("next-page")).click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="list-row"]').length === 55);
    assert.equal(await page.locator(testid("next-page")).isHidden(), true);
    assert.deepEqual(new Set(await rows.locator("td:nth-child(2)").allTextContents()), new Set([many]));
    // The form's filters land in the address.
    await page.locator(testid("filter-name")).fill("kid");
    await page.locator(testid("filter-apply")).click();
    await page.waitForURL(/\/tasks\?name=kid$/);
    await rows.first().waitFor();
    assert.deepEqual(new Set(await rows.locator("td:nth-child(2)").allTextContents()), new Set(["kid"]));
    await shoot(page, "tasks.png");
  });

  await check("no page error and no console error", async () => {
    assert.deepEqual(pageErrors, []);
  });

}

let failed = 0;
try {
  await main();
} catch (error) {
  failed = 1;
  if (!error?.reported) console.error(`not ok - ${error?.stack ?? error}`);
} finally {
  clearTimeout(overall);
  await browser?.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
