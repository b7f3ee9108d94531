// Setup -> sign in -> invite a member -> accept in a second browser context ->
// the owner changes the member's role -> the audit page shows those events.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, browser, shot, waitForWasm, openHydrated } from './helpers.mjs';

useServerAndBrowser();

/** Waits until the page's wasm has hydrated (a client-only control responds). */
async function waitHydrated(page, field) {
  const toggle = page.getByTestId(`show-${field}`);
  const input = page.getByTestId(field);
  for (let i = 0; i < 100; i++) {
    await toggle.check();
    if ((await input.getAttribute('type')) === 'text') {
      await toggle.uncheck();
      return;
    }
    await toggle.uncheck();
    await page.waitForTimeout(100);
  }
  assert.fail(`the page never hydrated: "show password" did nothing`);
}

test('owner invites a member who accepts; the role change is audited', async () => {
  const owner = await browser.newContext();
  const page = await owner.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));

  // First run: the console sends us to setup.
  await page.goto(server.url + '/');
  await page.waitForURL('**/setup');
  await waitHydrated(page, 'password');
  await page.getByLabel('Your name').fill('Ada Owner');
  await page.getByLabel('Email').fill('ada@example.com');
  await page.getByTestId('password').fill('correct horse battery');
  await page.getByLabel('Organization name').fill('Acme AI');
  await shot(page, '01-setup');
  await page.getByRole('button', { name: 'Create owner account' }).click();
  await page.waitForURL(/\/orgs\/[0-9a-f]+$/);
  const orgUrl = page.url();
  await page.getByTestId('my-role').waitFor();
  assert.equal(await page.getByTestId('my-role').textContent(), 'Owner');

  // Sign out, then sign in (after hydration: before it the button does nothing).
  await waitForWasm(page);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL('**/login');
  // Email first: Continue finds no single sign-on for it and asks for the password.
  await page.getByTestId('email').fill('ada@example.com');
  await page.getByTestId('continue').click();
  await waitHydrated(page, 'password');
  await page.getByTestId('password').fill('wrong password!!');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').textContent(), /wrong email or password/);
  await page.getByTestId('password').fill('correct horse battery');
  await shot(page, '02-sign-in');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(orgUrl);

  // Invite a member.
  await openHydrated(page, orgUrl + '/members', 'invite-email');
  await page.getByTestId('invite-email').fill('bob@example.com');
  await page.getByTestId('invite-role').selectOption('member');
  await page.getByRole('button', { name: 'Create invitation link', exact: true }).click();
  const link = (await page.getByTestId('invite-link').textContent()).trim();
  assert.match(link, /\/invite\/[0-9a-f]{64}$/);
  await shot(page, '03-invitation-link');

  // Accept in a second browser context (another person).
  const invitee = await browser.newContext();
  const bob = await invitee.newPage();
  await bob.goto(link);
  await waitHydrated(bob, 'password');
  assert.match(await bob.locator('main').textContent(), /Acme AI/);
  await bob.getByLabel('Your name').fill('Bob Builder');
  await bob.getByTestId('password').fill('bobs secret pass');
  await shot(bob, '04-accept-invitation');
  await bob.getByRole('button', { name: 'Accept invitation' }).click();
  await bob.waitForURL(orgUrl);
  await bob.getByTestId('my-role').waitFor();
  assert.equal(await bob.getByTestId('my-role').textContent(), 'Member');
  await shot(bob, '05-member-view');
  // A member has no Members or Audit pages.
  assert.equal(await bob.getByRole('link', { name: 'Audit log' }).count(), 0);

  // The owner changes Bob's role to billing manager.
  await page.goto(orgUrl + '/members');
  const row = page.getByTestId('member-bob@example.com');
  await row.waitFor();
  await waitForWasm(page);
  await row.getByLabel('Role').selectOption('billing');
  // Reload only once the server has answered the change.
  const changed = page.waitForResponse((r) => r.url().includes('/api/console/change_member_role'));
  await row.getByRole('button', { name: 'Change role' }).click();
  assert.equal((await changed).status(), 200);
  await page.reload();
  await row.waitFor();
  assert.equal(await row.getByLabel('Role').inputValue(), 'billing');
  await shot(page, '06-role-changed');

  // The audit page lists what happened, newest first.
  await page.goto(orgUrl + '/audit');
  const table = page.getByTestId('audit-table');
  await table.waitFor();
  const actions = await table.locator('tbody tr td:nth-child(3)').allTextContents();
  assert.deepEqual(actions, [
    'member.role_changed',
    'invitation.accepted',
    'invitation.created',
    'setup.owner_created',
  ]);
  await shot(page, '07-audit-log');

  // Filter by action.
  await page.locator('select[name=action]').selectOption('invitation.created');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/action=invitation.created/);
  assert.deepEqual(await table.locator('tbody tr td:nth-child(3)').allTextContents(), ['invitation.created']);

  // The Permissions page renders the policy table.
  await page.goto(server.url + '/permissions');
  const matrix = page.getByTestId('permissions');
  await matrix.waitFor();
  assert.equal(await matrix.locator('tbody tr').count(), 24);
  const logRow = matrix.locator('tbody tr', { hasText: 'view request log' });
  assert.deepEqual(await logRow.locator('td').allTextContents(), ['yes', 'yes', 'no', 'no', 'no', 'no', 'no', 'no']);
  const billingRow = matrix.locator('tbody tr', { hasText: 'billing & credits' });
  assert.deepEqual(await billingRow.locator('td').allTextContents(), ['yes', 'no', 'no', 'no', 'yes', 'no', 'no', 'no']);
  assert.equal(await matrix.locator('thead th').last().textContent(), 'SCIM token');
  await shot(page, '08-permissions');

  // A second organization, then back to the first with the header's switcher.
  await page.goto(server.url + '/account');
  await waitForWasm(page);
  await page.getByLabel('Name', { exact: true }).fill('Side Project');
  await page.getByRole('button', { name: 'Create organization' }).click();
  await page.waitForURL((u) => u.pathname.startsWith('/orgs/') && u.href !== orgUrl);
  await page.locator('h1', { hasText: 'Side Project' }).waitFor();
  await waitForWasm(page);
  await page.getByLabel('Organization', { exact: true }).selectOption({ label: 'Acme AI' });
  await page.waitForURL(orgUrl);
  await page.locator('h1', { hasText: 'Acme AI' }).waitFor();
  await shot(page, '09-switched-org');

  assert.deepEqual(errors, [], 'no uncaught errors in the page');
  await owner.close();
  await invitee.close();
});
