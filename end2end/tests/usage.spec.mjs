// Seeded usage through /v1, then the owner's usage page: ECharts draws the
// charts in headless Chromium and the totals equal what /v1 metered (tokens
// from each answer's usage, at the model's price). The billing page takes a
// credit entry and shows the month's statement; with prepaid credits used up,
// every page shows the banner and /v1 answers 402. The request log lists them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, shot, call, setUpOwner, openHydrated } from './helpers.mjs';

useServerAndBrowser();

// The console's dollar format: cents at least, more digits where they matter.
function usd(micros) {
  const whole = Math.floor(micros / 1e6);
  let frac = String(micros % 1e6).padStart(6, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return `$${whole}.${frac}`;
}

test('usage charts render and their totals equal what /v1 metered', async () => {
  const { page, errors, org } = await setUpOwner();
  // 10 USD per million tokens in and out: 10 micro-USD a token.
  await call(page, 'upsert_model', {
    org_id: org, id: 'mock/priced', provider: 'mock', upstream: 'echo',
    input_price: '10', output_price: '10', context_window: '128000',
  });
  await call(page, 'update_spending', { org_id: org, spend_cap: '', spend_cap_reset: 'monthly', content_logging: 'on' });
  const tokens = [];
  for (const name of ['Search', 'Support']) {
    const { id: project } = await call(page, 'create_project', { org_id: org, name });
    await call(page, 'update_project', {
      org_id: org, project_id: project, name, 'models[0]': 'mock/priced', 'models[1]': 'mock/echo',
      tpm: '', rpm: '', max_budget: '', budget_reset: 'never', ip_allowlist: '', content_logging: 'on',
    });
    const issued = await call(page, 'create_key', {
      org_id: org, project_id: project, name: `${name.toLowerCase()}-app`, max_budget: '1', budget_reset: 'monthly',
      tpm: '', rpm: '', expires_at: '', tags: '', 'models[0]': 'mock/priced', 'models[1]': 'mock/echo',
    });
    tokens.push({ project, token: issued.token });
  }
  // Seed: 12 requests over two projects, two models and three APIs (chat,
  // the Responses API, the Messages API).
  let tin = 0; let tout = 0; let cost = 0;
  for (let i = 0; i < 12; i++) {
    const model = i % 4 === 3 ? 'mock/echo' : 'mock/priced';
    const text = `request ${i}: ${'words '.repeat(10 + i)}`;
    const [path, data] = [
      ['chat/completions', { model, max_tokens: 5 + i, messages: [{ role: 'user', content: text }] }],
      ['responses', { model, max_output_tokens: 5 + i, input: text }],
      ['messages', { model, max_tokens: 5 + i, messages: [{ role: 'user', content: text }] }],
    ][i % 3];
    const res = await page.request.post(`${server.url}/v1/${path}`, {
      headers: { authorization: `Bearer ${tokens[i % 2].token}` },
      data,
    });
    assert.equal(res.status(), 200);
    const { usage } = await res.json();
    const [a, b] = [usage.prompt_tokens ?? usage.input_tokens, usage.completion_tokens ?? usage.output_tokens];
    tin += a; tout += b;
    if (model === 'mock/priced') cost += (a + b) * 10;
  }
  // The ledger writes behind (within a second).
  for (let i = 0; i < 50; i++) {
    const r = await call(page, 'get_usage', { org_id: org });
    if (r.totals.requests === 12) break;
    await page.waitForTimeout(200);
  }

  await openHydrated(page, `${server.url}/orgs/${org}/usage`, 'usage-totals');
  // ECharts draws into each chart element once the page is live.
  for (const id of ['chart-spend', 'chart-tokens', 'chart-projects']) {
    await page.locator(`#${id} canvas, #${id} svg`).first().waitFor({ timeout: 15000 });
  }
  assert.equal(await page.getByTestId('total-requests').textContent(), '12');
  assert.equal(await page.getByTestId('total-tokens-in').textContent(), String(tin));
  assert.equal(await page.getByTestId('total-tokens-out').textContent(), String(tout));
  assert.equal(await page.getByTestId('total-spend').textContent(), usd(cost));
  const topKeys = await page.getByTestId('top-keys').textContent();
  assert.ok(topKeys.includes('search-app') && topKeys.includes('support-app'), topKeys);
  await page.getByTestId('key-budgets').getByText('search-app').waitFor();
  const byEndpoint = await page.getByTestId('by-endpoint').textContent();
  for (const e of ['chat.completions', 'responses', 'messages']) {
    assert.ok(byEndpoint.includes(e), byEndpoint);
  }
  await shot(page, '20-usage');

  // Billing: a credit entry through the form, the statement of this month.
  await openHydrated(page, `${server.url}/orgs/${org}/billing`, 'billing-standing');
  await page.getByLabel('Kind').selectOption('purchase');
  await page.getByLabel('Amount (USD; an adjustment may be negative)').fill('0.001');
  await page.getByLabel('Reference').fill('INV-2026-11');
  await page.getByLabel('Note').fill('November top-up');
  await page.getByRole('button', { name: 'Add' }).click();
  await page.getByTestId('credit-ledger').getByText('INV-2026-11').waitFor();
  assert.equal(await page.getByTestId('statement-total').textContent(), usd(cost));
  const href = await page.getByTestId('statement-csv').getAttribute('href');
  const csv = decodeURIComponent(href.replace(/^data:text\/csv;charset=utf-8,/, ''));
  const total = csv.trim().split('\n').pop().split(',');
  assert.equal(total[2], 'TOTAL');
  assert.equal(Math.round(Number(total[7]) * 1e6), cost);
  await shot(page, '21-billing');

  // Prepaid with $0.001 of credits, already spent: the banner and a 402.
  await page.getByLabel('Stop requests when the balance is used up').check();
  await page.getByRole('button', { name: 'Save' }).first().click();
  await page.getByTestId('stop-banner').waitFor({ timeout: 10000 }).catch(async () => {
    await page.reload();
    await page.getByTestId('stop-banner').waitFor();
  });
  const refused = await page.request.post(`${server.url}/v1/chat/completions`, {
    headers: { authorization: `Bearer ${tokens[1].token}` },
    data: { model: 'mock/priced', max_tokens: 5, messages: [{ role: 'user', content: 'one more' }] },
  });
  assert.equal(refused.status(), 402);
  assert.equal((await refused.json()).error.code, 'org_credits_exhausted');
  await page.goto(`${server.url}/orgs/${org}/projects/${tokens[0].project}`);
  await page.getByTestId('stop-banner').waitFor();
  await shot(page, '22-credits-banner');

  // The request log of a project, with a kept body on demand.
  await openHydrated(page, `${server.url}/orgs/${org}/projects/${tokens[0].project}/requests`, 'request-log');
  assert.equal(await page.getByTestId('request-log').locator('tbody tr').count(), 6);
  await page.getByRole('button', { name: 'Show' }).first().click();
  await page.getByTestId('request-bodies').getByText('request 10').first().waitFor();
  await shot(page, '23-request-log');
  assert.deepEqual(errors, []);
});
