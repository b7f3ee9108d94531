// The organization's overview: usage seeded through /v1, then the owner sees
// this month's spend, the cap and the credits, the chart drawn by ECharts, a
// project near its budget, the keys expiring soon and recent audit events,
// and a snippet to call the proxy; a project member sees their project and
// their own key but no organization-wide figure. Then the grouped navigation
// at 1280 px and at 600 px, and the key-reveal dialog on a long page (its
// backdrop covers the viewport wherever the page is scrolled).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  useServerAndBrowser, server, browser, shot, call, openHydrated, collectErrors, setUpOwner, waitForWasm,
} from './helpers.mjs';
import { artifacts } from '../server.mjs';

useServerAndBrowser();

// The console's dollar format: cents at least, more digits where they matter.
function usd(micros) {
  const whole = Math.floor(micros / 1e6);
  let frac = String(micros % 1e6).padStart(6, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return `$${whole}.${frac}`;
}

/** `YYYY-MM-DDTHH:MM` (UTC) `days` from now, as the key form takes it. */
const inDays = (days) => new Date(Date.now() + days * 24 * 3600 * 1000).toISOString().slice(0, 16);


const MODELS = { 'models[0]': 'mock/priced', 'models[1]': 'mock/echo' };
const OPEN = { tpm: '', rpm: '', ip_allowlist: '', content_logging: 'on' };

test('the overview shows an owner everything and a member no organization-wide figure', async () => {
  const { page, errors, org } = await setUpOwner();
  const orgUrl = `${server.url}/orgs/${org}`;
  await call(page, 'upsert_model', {
    org_id: org, id: 'mock/priced', provider: 'mock', upstream: 'echo',
    input_price: '10', output_price: '10', context_window: '128000',
  });
  await call(page, 'update_spending', { org_id: org, spend_cap: '50', spend_cap_reset: 'monthly', content_logging: 'on' });
  await call(page, 'add_credit', { org_id: org, kind: 'purchase', amount: '20', note: 'first top-up', reference: 'PO-7' });
  const projects = {};
  for (const name of ['Search', 'Support']) {
    const { id } = await call(page, 'create_project', { org_id: org, name });
    await call(page, 'update_project', {
      org_id: org, project_id: id, name, ...MODELS, ...OPEN, max_budget: '', budget_reset: 'never',
    });
    projects[name] = id;
  }

  // Bob joins the organization and the Search project as a member.
  const invite = await call(page, 'invite_member', { org_id: org, email: 'bob@example.com', role: 'member' });
  const bobCtx = await browser.newContext();
  const bob = await bobCtx.newPage();
  collectErrors(bob, errors);
  await bob.goto(invite.link);
  await call(bob, 'accept_invitation', {
    token: invite.link.split('/').pop(), name: 'Bob Builder', password: 'bobs secret pass',
  });
  const { id: bobId } = await call(bob, 'current_user', {});
  await call(page, 'add_project_member', { org_id: org, project_id: projects.Search, user_id: bobId, role: 'member' });

  // Keys: the owner's expires in 3 days, one in 60 (not soon), Bob's in 5.
  const key = (who, project, name, days) => call(who, 'create_key', {
    org_id: org, project_id: projects[project], name, max_budget: '', budget_reset: 'never',
    tpm: '', rpm: '', expires_at: days ? inDays(days) : '', tags: '', ...MODELS,
  });
  const deploy = await key(page, 'Support', 'deploy-bot', 3);
  await key(page, 'Support', 'nightly-batch', 60);
  const laptop = await key(bob, 'Search', 'bob-laptop', 5);

  // Usage: the owner's key in Support, Bob's in Search.
  let cost = 0; let supportCost = 0;
  for (let i = 0; i < 8; i++) {
    const token = i % 2 ? laptop.token : deploy.token;
    const res = await page.request.post(`${server.url}/v1/chat/completions`, {
      headers: { authorization: `Bearer ${token}` },
      data: { model: 'mock/priced', max_tokens: 6 + i, messages: [{ role: 'user', content: `question ${i}: ${'why '.repeat(8 + i)}` }] },
    });
    assert.equal(res.status(), 200);
    const { usage } = await res.json();
    const c = (usage.prompt_tokens + usage.completion_tokens) * 10;
    cost += c;
    if (!(i % 2)) supportCost += c;
  }
  // The ledger writes behind (within a second).
  for (let i = 0; i < 50; i++) {
    const o = await call(page, 'get_overview', { org_id: org });
    if (o.spend.month_micros === cost) break;
    await page.waitForTimeout(200);
  }
  // Support's budget so that what it spent is 90 % of it: near its budget.
  const budget = Math.floor(supportCost / 0.9);
  await call(page, 'update_project', {
    org_id: org, project_id: projects.Support, name: 'Support', ...MODELS, ...OPEN,
    max_budget: (budget / 1e6).toFixed(6), budget_reset: 'monthly',
  });

  // The owner's overview.
  await page.setViewportSize({ width: 1280, height: 800 });
  await openHydrated(page, orgUrl, 'overview-spend');
  await page.locator('#overview-chart canvas, #overview-chart svg').first().waitFor({ timeout: 15000 });
  assert.equal(await page.getByTestId('overview-month-spend').textContent(), usd(cost));
  assert.equal(await page.getByTestId('overview-cap').textContent(), `${usd(cost)} of $50.00`);
  assert.equal(await page.getByTestId('overview-balance').textContent(), usd(20e6 - cost));
  const support = page.getByTestId('overview-project-Support');
  assert.match(await support.textContent(), /90%\s*near budget/);
  const expiring = page.getByTestId('overview-keys');
  await expiring.getByTestId('overview-key-deploy-bot').waitFor();
  await expiring.getByTestId('overview-key-bob-laptop').waitFor();
  assert.equal(await expiring.getByTestId('overview-key-nightly-batch').count(), 0, 'expires in 60 days');
  const audit = page.getByTestId('overview-audit');
  assert.equal(await audit.locator('tbody tr').count(), 5);
  assert.match(await audit.textContent(), /project\.updated/);
  assert.match(await page.getByTestId('overview-curl').textContent(), new RegExp(`${server.url}/v1/chat/completions`));
  assert.match(await page.getByTestId('overview-python').textContent(), /model="mock\/priced"/);
  // Each part links to its page.
  for (const [name, path] of [['View usage', '/usage'], ['View the audit log', '/audit'], ['View all projects', '/projects']]) {
    assert.equal(await page.getByRole('link', { name, exact: true }).first().getAttribute('href'), `/orgs/${org}${path}`);
  }
  // The settings stay on the page, below.
  await page.getByTestId('spending').waitFor();
  await shot(page, 'overview-owner');

  // The navigation: four groups, one row at 1280 px.
  const nav = page.getByRole('navigation', { name: 'Console' });
  const tops = await nav.getByRole('link').evaluateAll((as) => as.map((a) => Math.round(a.getBoundingClientRect().top)));
  assert.equal(tops.length, 14);
  assert.equal(new Set(tops).size, 1, `one row: ${tops}`);
  assert.deepEqual(await nav.locator('.nav-heading').allTextContents(), ['Organization', 'Projects & keys', 'Money', 'Settings']);
  assert.equal(await nav.getByRole('link', { name: 'Overview' }).getAttribute('aria-current'), 'page');
  await page.locator('header').screenshot({ path: join(artifacts, 'overview-nav-1280.png') });
  // At 600 px: nothing wider than the window, every link on screen.
  await page.setViewportSize({ width: 600, height: 900 });
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no sideways scroll');
  for (const box of await nav.getByRole('link').evaluateAll((as) => as.map((a) => a.getBoundingClientRect().right))) {
    assert.ok(box <= 600, `a link ends at ${box}`);
  }
  await page.locator('header').screenshot({ path: join(artifacts, 'overview-nav-600.png') });
  await shot(page, 'overview-owner-600');
  // Real links, usable from the keyboard.
  await nav.getByRole('link', { name: 'Usage', exact: true }).focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(`${orgUrl}/usage`);
  await page.setViewportSize({ width: 1280, height: 800 });

  // Bob, a project member: his project and his key; no spend, credits or events.
  await bob.setViewportSize({ width: 1280, height: 800 });
  await openHydrated(bob, orgUrl, 'overview-projects');
  await bob.locator('#overview-chart canvas, #overview-chart svg').first().waitFor({ timeout: 15000 });
  for (const part of ['overview-spend', 'overview-cap', 'overview-credits', 'overview-audit']) {
    assert.equal(await bob.getByTestId(part).count(), 0, `${part} is not for a member`);
  }
  await bob.getByRole('heading', { name: 'Your spend, last 30 days' }).waitFor();
  const bobsProjects = bob.getByTestId('overview-projects');
  assert.equal(await bobsProjects.getByRole('link', { name: 'Search' }).count(), 1);
  assert.equal(await bobsProjects.getByRole('link', { name: 'Support' }).count(), 0);
  await bob.getByTestId('overview-key-bob-laptop').waitFor();
  assert.equal(await bob.getByTestId('overview-key-deploy-bot').count(), 0);
  assert.match(await bob.getByTestId('overview-model').textContent(), /^mock\//);
  const bobsNav = bob.getByRole('navigation', { name: 'Console' });
  assert.deepEqual(await bobsNav.locator('.nav-heading').allTextContents(), ['Organization', 'Projects & keys', 'Money']);
  assert.equal(await bobsNav.getByRole('link', { name: 'Audit log' }).count(), 0);
  const html = await bob.content();
  for (const hidden of [usd(cost), '$50.00', 'PO-7', 'nightly-batch']) assert.ok(!html.includes(hidden), hidden);
  await shot(bob, 'overview-member');

  // The key-reveal dialog on a long page, scrolled down: the backdrop covers
  // the viewport and the page behind it does not scroll.
  for (let i = 0; i < 12; i++) await key(page, 'Search', `extra-${String(i).padStart(2, '0')}`, 0);
  await page.setViewportSize({ width: 1280, height: 720 });
  await openHydrated(page, `${orgUrl}/projects/${projects.Search}`, 'key-list');
  assert.ok(await page.evaluate(() => document.documentElement.scrollHeight > 2 * window.innerHeight), 'a long page');
  await page.getByTestId('new-key').click();
  await page.getByTestId('key-name').first().fill('from-the-dialog');
  await page.getByTestId('create-key').click();
  await page.getByTestId('reveal').waitFor();
  const scrolled = await page.evaluate(() => window.scrollY);
  assert.ok(scrolled > 0, 'the page is scrolled');
  await page.mouse.wheel(0, 1500);
  await page.waitForTimeout(200);
  const cover = await page.locator('.modal-backdrop').evaluate((e) => {
    const r = e.getBoundingClientRect();
    return { top: r.top, left: r.left, width: r.width, height: r.height, w: window.innerWidth, h: window.innerHeight, y: window.scrollY };
  });
  assert.deepEqual([cover.top, cover.left, cover.width, cover.height], [0, 0, cover.w, cover.h], JSON.stringify(cover));
  assert.equal(cover.y, scrolled, 'the page behind the dialog stays put');
  await shot(page, 'overview-reveal', { fullPage: false });
  await page.getByRole('button', { name: 'I have stored it' }).click();
  await page.getByTestId('reveal').waitFor({ state: 'detached' });
  await page.mouse.wheel(0, 300);
  await page.waitForFunction((y) => window.scrollY !== y, scrolled);

  await waitForWasm(bob);
  assert.deepEqual(errors, []);
  await bobCtx.close();
});
