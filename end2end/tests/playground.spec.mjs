// The playground: a project member streams answers from mock/echo and from
// a virtual model routed to the mock, sees tokens, cost, latency and the
// served model; the request is in usage under their playground key. A
// viewer has no playground link and its server function refuses them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, browser, shot, call, setUpOwner, openHydrated, collectErrors } from './helpers.mjs';

useServerAndBrowser();

async function join(owner, org, email, role, errors) {
  const invite = await call(owner, 'invite_member', { org_id: org, email, role });
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  collectErrors(page, errors, { allowRefused: true });
  await page.goto(invite.link);
  await call(page, 'accept_invitation', { token: invite.link.split('/').pop(), name: email, password: 'a long enough pass' });
  const me = await call(page, 'current_user', {});
  return { page, id: me.id };
}

test('a member chats in the playground; a viewer cannot', async () => {
  const { page: owner, errors, org } = await setUpOwner({ allowRefused: true });
  // Priced so that the cost shows: $10 per million tokens each way.
  await call(owner, 'upsert_model', {
    org_id: org, id: 'mock/priced', provider: 'mock', upstream: 'echo',
    input_price: '10', output_price: '10', context_window: '128000',
  });
  await call(owner, 'save_virtual_model', {
    org_id: org, id: 'smart/demo', description: 'to the mock', strategy: 'fallback', region: '', targets: 'mock/priced',
  });
  const { id: project } = await call(owner, 'create_project', { org_id: org, name: 'Lab' });
  await call(owner, 'update_project', {
    org_id: org, project_id: project, name: 'Lab', 'models[0]': 'mock/echo', 'models[1]': 'smart/demo',
    tpm: '', rpm: '', max_budget: '', budget_reset: 'never', ip_allowlist: '', content_logging: 'on',
  });
  const member = await join(owner, org, 'bea@example.com', 'member', errors);
  await call(owner, 'add_project_member', { org_id: org, project_id: project, user_id: member.id, role: 'member' });
  const viewer = await join(owner, org, 'vic@example.com', 'viewer', errors);

  const page = member.page;
  await openHydrated(page, `${server.url}/orgs/${org}/playground`, 'playground');
  await page.getByRole('link', { name: 'Playground' }).first().waitFor();
  assert.match(await page.getByTestId('playground-key').innerText(), /Playground/);

  // mock/echo, streamed.
  await page.getByTestId('playground-model').selectOption('mock/echo');
  await page.getByTestId('playground-system').fill('You are terse.');
  await page.getByTestId('playground-input').fill('hello from the playground');
  await page.getByTestId('playground-send').click();
  const stats = page.getByTestId('playground-stats');
  await stats.first().waitFor();
  assert.match(await page.getByTestId('playground-answer').first().innerText(), /hello from the playground/);
  assert.equal(await page.getByTestId('served-model').first().innerText(), 'mock/echo');
  assert.match(await page.getByTestId('tokens').first().innerText(), /^\d+ in, \d+ out$/);
  assert.match(await page.getByTestId('latency').first().innerText(), /^\d+ ms$/);

  // The virtual model, served by the mock at its price.
  await page.getByTestId('playground-model').selectOption('smart/demo');
  await page.getByTestId('playground-input').fill('and now the virtual one');
  await page.getByTestId('playground-send').click();
  await stats.nth(1).waitFor();
  assert.equal(await page.getByTestId('served-model').nth(1).innerText(), 'mock/priced');
  assert.match(await page.getByTestId('cost').nth(1).innerText(), /^\$0\.\d+$/);
  await shot(page, 'playground-01-member');

  // The requests are in usage, under the playground key.
  let usage;
  for (let i = 0; i < 50; i++) {
    usage = await call(page, 'get_usage', { org_id: org });
    if (usage.totals.requests === 2) break;
    await page.waitForTimeout(200);
  }
  assert.equal(usage.totals.requests, 2, JSON.stringify(usage.totals));
  assert.deepEqual(usage.by_key.map((k) => k.name), ['Playground']);
  assert.deepEqual(usage.by_requested_model.map((m) => m.name).sort(), ['mock/echo', 'smart/demo']);
  const keys = await call(page, 'my_keys', { org_id: org });
  assert.ok(JSON.stringify(keys).includes('Playground'), 'the key is in the member\'s key list');

  // The viewer: no link, and the server function refuses.
  await openHydrated(viewer.page, `${server.url}/orgs/${org}`, 'my-role');
  assert.equal(await viewer.page.getByRole('link', { name: 'Playground' }).count(), 0);
  const res = await viewer.page.request.post(`${server.url}/api/console/open_playground`, { form: { org_id: org, project_id: project } });
  assert.ok([403, 404].includes(res.status()), `viewer: ${res.status()}`);
  await shot(viewer.page, 'playground-02-viewer-nav');
  assert.deepEqual(errors.filter((e) => !e.includes('403') && !e.includes('404')), []);
});
