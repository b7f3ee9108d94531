// Automation and the console see the same things: a key made through the
// FastRouter-compatible API and a team made through the LiteLLM-compatible
// one show up in the console (the key as "service"); an admin makes a service
// key with the form's checkbox; the provisioning page links the OpenAPI
// document, which answers without a key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, shot, call, waitForWasm, setUpOwner, openHydrated } from './helpers.mjs';

useServerAndBrowser();

async function machine(token, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test('what automation makes is in the console; admins make service keys', async () => {
  const { ctx, page, errors, org } = await setUpOwner();
  const pk = (await call(page, 'create_provisioning_key', { org_id: org, name: 'terraform' })).token;

  // A team through the LiteLLM API (curl-style: no JSON content type), then a
  // service key in it through the FastRouter API.
  const team = await machine(pk, '/team/new', { team_alias: 'Production', max_budget: 100, budget_duration: '1mo' });
  assert.equal(team.status, 200, JSON.stringify(team.body));
  const made = await machine(pk, '/prod/createServiceKey', {
    api_key_name: 'ci-pipeline', project_name: 'Production', models: ['mock/echo'],
    credit_limit: 150, reset_budget_interval: 'daily', tags: ['ci'],
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  await page.goto(`${server.url}/orgs/${org}/projects/${team.body.team_id}`);
  await page.getByRole('cell', { name: 'ci-pipeline' }).waitFor();
  await waitForWasm(page);
  const row = page.getByRole('row').filter({ hasText: 'ci-pipeline' });
  assert.ok((await row.textContent()).includes('service'), await row.textContent());
  assert.ok(!(await page.content()).includes(made.body.api_key), 'the secret is never shown');

  // The owner makes a service key with the checkbox.
  await page.getByTestId('new-key').click();
  const form = page.locator('form').filter({ has: page.getByTestId('create-key') });
  await form.getByTestId('key-name').fill('nightly-batch');
  await form.getByTestId('key-service').check();
  await form.getByTestId('create-key').click();
  await page.getByTestId('token').waitFor();
  await page.getByRole('button', { name: 'I have stored it' }).click();
  const nightly = page.getByRole('row').filter({ hasText: 'nightly-batch' });
  await nightly.waitFor();
  assert.ok((await nightly.textContent()).includes('service'), await nightly.textContent());
  await shot(page, '17-service-keys');

  // The audit log names the provisioning key as the actor.
  await page.goto(`${server.url}/orgs/${org}/audit`);
  await page.getByRole('cell', { name: "provisioning key 'terraform'" }).first().waitFor();
  await shot(page, '18-audit-provisioning');

  // The provisioning page links the OpenAPI document.
  await openHydrated(page, `${server.url}/orgs/${org}/access`, 'machine-apis');
  await shot(page, '19-machine-apis');
  const href = await page.getByTestId('openapi-link').getAttribute('href');
  const doc = await (await fetch(`${server.url}${href}`)).json();
  assert.equal(doc.info.title, 'Tollgate API');
  assert.ok(doc.paths['/api/v1/keys']);
  assert.deepEqual(errors, []);
  await ctx.close();
});
