// The owner adds an OpenAI-compatible provider through the console (the key
// is shown again only as its last four characters), sets the organization's
// spend cap and allows content logging; a key made in the console then
// answers on /v1 through the built-in mock provider. A provisioning key made on
// its page is shown once and refused on /v1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, shot, call, setUpOwner, openHydrated } from './helpers.mjs';

useServerAndBrowser();

test('an owner adds a provider and a spend cap; a console key answers on /v1', async () => {
  const { ctx, page, errors, org } = await setUpOwner();

  await openHydrated(page, `${server.url}/orgs/${org}/providers`, 'providers');
  await page.getByLabel('Name').fill('openai');
  await page.getByLabel('Base URL').fill('https://api.openai.com/v1');
  await page.getByLabel('API key (empty: keep the stored one)').fill('sk-proj-console-test-k3y9');
  await page.getByRole('button', { name: 'Save provider' }).click();
  await page.getByRole('cell', { name: '…k3y9' }).waitFor();
  assert.ok(!(await page.content()).includes('sk-proj-console-test'), 'the key is never shown again');
  await shot(page, '13-providers');

  await openHydrated(page, `${server.url}/orgs/${org}`, 'spending');
  await page.getByLabel('Spend cap (USD, empty: none)').fill('250');
  await page.getByLabel('Resets').selectOption('monthly');
  await page.getByLabel('Allow projects to keep request and response bodies').check();
  await page.getByRole('button', { name: 'Save' }).nth(1).click();
  await page.getByText('$250.00 (monthly)').waitFor();
  await page.getByText('kept where a project allows it').waitFor();
  await shot(page, '14-spending');

  // A provisioning key for automation: the token once, then only its hint.
  await openHydrated(page, `${server.url}/orgs/${org}/access`, 'provisioning-keys');
  await page.getByTestId('provisioning-name').fill('ci-pipeline');
  await page.getByTestId('create-provisioning-key').click();
  const provisioning = await page.getByTestId('token').textContent();
  assert.match(provisioning, /^sk-tgp-/);
  await shot(page, '15-provisioning-reveal', { fullPage: false });
  await page.getByRole('button', { name: 'I have stored it' }).click();
  await page.getByRole('cell', { name: 'ci-pipeline' }).waitFor();
  assert.ok(!(await page.content()).includes(provisioning), 'the token is gone once dismissed');
  await shot(page, '16-provisioning');
  const refused = await fetch(`${server.url}/v1/models`, { headers: { authorization: `Bearer ${provisioning}` } });
  assert.equal(refused.status, 403);

  const project = await call(page, 'create_project', { org_id: org, name: 'Production' });
  const issued = await call(page, 'create_key', {
    org_id: org, project_id: project.id, name: 'app', max_budget: '5', budget_reset: 'monthly',
    tpm: '', rpm: '', expires_at: '', tags: '',
  });
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${issued.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock/echo', messages: [{ role: 'user', content: 'hello from the browser test' }] }),
  });
  assert.equal(res.status, 200);
  const answer = await res.json();
  assert.equal(answer.choices[0].message.content, 'hello from the browser test');
  assert.deepEqual(errors, []);
  await ctx.close();
});
