// What every browser test file shares: one server and one headless Chromium for
// the file, screenshots, server-function calls, waiting for hydration, and an
// owner who has set up a fresh Tollgate. Not a spec (node --test runs
// end2end/tests/*.spec.mjs), so it registers nothing until a spec calls
// useServerAndBrowser().
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, artifacts, chromiumArgs } from '../server.mjs';

/** The file's server ({ url, proc, log, stop }) and browser; set by the
 * before() hook that useServerAndBrowser() registers (ES module bindings are
 * live: a spec that imports them sees the values once the hook has run). */
export let server;
export let browser;

/** Starts a server and Chromium before the file's tests and stops them
 * after; `env` adds to the server's environment. */
export function useServerAndBrowser({ env = {} } = {}) {
  before(async () => {
    server = await startServer(env);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs });
  });
  after(async () => {
    await browser?.close();
    server?.stop();
  });
}

/** A full-page screenshot in end2end/artifacts/<name>.png; with fullPage
 * false, what the viewport shows (a dialog: a full-page capture draws its
 * fixed backdrop over one viewport's height only). */
export const shot = (page, name, { fullPage = true } = {}) =>
  page.screenshot({ path: join(artifacts, `${name}.png`), fullPage });

/** Calls a server function with the page's session; fails unless it answers 200. */
export async function call(page, name, form) {
  const res = await page.request.post(`${server.url}/api/console/${name}`, { form });
  const body = await res.json();
  assert.equal(res.status(), 200, `${name}: ${JSON.stringify(body)}`);
  return body;
}

/** Waits for the wasm bundle to have loaded and run (hydration done). */
export async function waitForWasm(page) {
  await page.waitForFunction(() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('.wasm')));
  await page.waitForLoadState('networkidle');
}

/** Goes to `url`, waits for the element with data-testid `testId` (the page
 * rendered), then for hydration; returns that element's locator. */
export async function openHydrated(page, url, testId) {
  await page.goto(url);
  const element = page.getByTestId(testId);
  await element.waitFor();
  await waitForWasm(page);
  return element;
}

/** Pushes the page's uncaught errors and console errors (a hydration error is
 * one) onto `errors`. With allowRefused, refused requests ("Failed to load
 * resource": a member's page is told 403 for what it may not see) are not. */
export function collectErrors(page, errors, { allowRefused = false } = {}) {
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (allowRefused && m.text().startsWith('Failed to load resource')) return;
    errors.push(m.text());
  });
}

/** A new browser context in which Ada Owner sets up Tollgate (organization
 * "Acme AI") through the setup server function; the page stays signed in.
 * Returns { ctx, page, errors, org } (errors as collectErrors fills it). */
export async function setUpOwner({ allowRefused = false } = {}) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const errors = [];
  collectErrors(page, errors, { allowRefused });
  await page.goto(server.url + '/setup');
  const { org_id: org } = await call(page, 'setup', {
    email: 'ada@example.com', name: 'Ada Owner', password: 'correct horse battery', org_name: 'Acme AI',
  });
  return { ctx, page, errors, org };
}
