// The owner (admin of every project) creates a project and adds a member; the
// member creates a key with a $5 weekly budget, two models, RPM 10 and an
// expiry next month, reads the token from the reveal dialog, and after a
// reload sees only the hint; the owner revokes it and the list says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  useServerAndBrowser, server, browser, shot, call, waitForWasm, openHydrated, collectErrors, setUpOwner,
} from './helpers.mjs';

useServerAndBrowser();

test('a member creates a key, sees its token once, and the owner revokes it', async () => {
  // Console errors fail the test, except a member's refused (403) requests.
  const { ctx: ownerCtx, page: owner, errors, org } = await setUpOwner({ allowRefused: true });
  const invite = await call(owner, 'invite_member', { org_id: org, email: 'bob@example.com', role: 'member' });

  const memberCtx = await browser.newContext();
  const bob = await memberCtx.newPage();
  collectErrors(bob, errors, { allowRefused: true });
  await bob.goto(invite.link);
  await call(bob, 'accept_invitation', {
    token: invite.link.split('/').pop(), name: 'Bob Builder', password: 'bobs secret pass',
  });

  // The owner creates the project in the console and adds Bob to it.
  await openHydrated(owner, `${server.url}/orgs/${org}/projects`, 'project-name');
  await owner.getByTestId('project-name').fill('Production');
  await owner.getByRole('button', { name: 'Create project' }).click();
  await owner.getByRole('link', { name: 'Production' }).click();
  await owner.getByTestId('project-title').waitFor();
  const projectUrl = owner.url();
  await waitForWasm(owner);
  await owner.getByTestId('add-project-member').selectOption({ label: 'Bob Builder (bob@example.com)' });
  await owner.getByTestId('add-project-role').selectOption('member');
  await owner.getByRole('button', { name: 'Add to project' }).click();
  await owner.getByTestId('project-member-bob@example.com').waitFor();

  // Bob creates his key.
  await bob.goto(`${server.url}/orgs/${org}/projects`);
  await bob.getByRole('link', { name: 'Production' }).click();
  await bob.getByTestId('project-title').waitFor();
  await waitForWasm(bob);
  await bob.getByTestId('new-key').click();
  await bob.getByTestId('key-name').fill('ci-bot');
  await bob.getByTestId('key-budget').fill('5');
  await bob.getByTestId('key-reset').selectOption('weekly');
  await bob.getByTestId('key-model-mock/echo').check();
  await bob.getByTestId('key-model-mock/fast').check();
  await bob.getByTestId('key-rpm').fill('10');
  const next = new Date(Date.now() + 31 * 24 * 3600 * 1000);
  const local = next.toISOString().slice(0, 16);
  await bob.getByTestId('key-expiry').fill(local);
  await bob.getByTestId('key-tags').fill('ci, prod');
  await shot(bob, '10-create-key-form');
  await bob.getByTestId('create-key').click();
  const dialog = bob.getByTestId('reveal');
  await dialog.waitFor();
  const token = (await bob.getByTestId('token').textContent()).trim();
  assert.match(token, /^sk-tg-[A-Za-z0-9]{12}-[A-Za-z0-9]{38}$/);
  assert.match(await dialog.textContent(), /will not be shown again/);
  await shot(bob, '11-reveal-dialog', { fullPage: false });
  await bob.getByRole('button', { name: 'I have stored it' }).click();
  await dialog.waitFor({ state: 'detached' });
  const row = bob.getByTestId('key-ci-bot');
  await row.waitFor();
  assert.match(await row.textContent(), /\$0\.00 \/ \$5\.00/);

  // After a reload only the hint is there.
  await bob.reload();
  await row.waitFor();
  const html = await bob.content();
  assert.ok(!html.includes(token), 'the token is gone after a reload');
  assert.ok(html.includes('sk-tg-…' + token.slice(-4)), 'the hint is shown');
  const listed = await call(bob, 'list_keys', { org_id: org, project_id: projectUrl.split('/').pop() });
  assert.equal(listed.keys[0].models.join(','), 'mock/echo,mock/fast');
  assert.equal(listed.keys[0].rpm_limit, 10);
  assert.equal(listed.keys[0].budget_reset, 'weekly');
  assert.equal(listed.keys[0].expires_at, Date.parse(local + ':00Z'));
  assert.ok(!JSON.stringify(listed).includes(token));

  // The owner revokes it; the list says so, for both of them.
  await owner.reload();
  const ownersRow = owner.getByTestId('key-ci-bot');
  await ownersRow.waitFor();
  await waitForWasm(owner);
  await ownersRow.getByText('Manage').click();
  await ownersRow.getByTestId('revoke').click();
  await owner.waitForFunction(() =>
    document.querySelector('[data-testid="key-ci-bot"] [data-testid="key-status"]')?.textContent === 'revoked');
  await owner.waitForFunction(() => document.querySelector('[data-testid="live-keys"]')?.textContent === '0');
  await shot(owner, '12-key-revoked');
  await bob.reload();
  await row.waitFor();
  assert.equal(await row.getByTestId('key-status').textContent(), 'revoked');

  assert.deepEqual(errors, [], 'no uncaught errors in the pages');
  await ownerCtx.close();
  await memberCtx.close();
});
