// Single sign-on through a real IdP (nanoidp, OIDC and SAML): the owner adds
// both connections on the "Single sign-on & SCIM" page; Carol (engineering)
// signs in from the login page through OIDC and is a member, Alice
// (tollgate-admins) through SAML and is an owner, Bob (sales, unmapped) gets
// the default role; a SCIM token is made and its request listed; with SSO
// enforced a member's password is refused and the break-glass owner's is not.
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import {
  useServerAndBrowser, server, browser, shot, call, waitForWasm, openHydrated, setUpOwner,
} from './helpers.mjs';

// The IdP is on 127.0.0.1: this file's server may reach private addresses.
// (node --test runs each file in its own process, so no other file sees it.)
process.env.TOLLGATE_ALLOW_PRIVATE_NETWORKS = 'true';
useServerAndBrowser();

let idp;

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** nanoidp on a free port, with the Rust tests' fixtures (users alice, bob,
 * carol, dave @corp.test; client tollgate/tollgate-secret). */
async function startIdp() {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-nanoidp-'));
  const fixtures = join(process.cwd(), 'server', 'tests', 'api', 'fixtures', 'nanoidp');
  for (const f of ['settings.yaml', 'users.yaml']) copyFileSync(join(fixtures, f), join(dir, f));
  mkdirSync(join(dir, 'keys'));
  const port = await freePort();
  const bin = join(homedir(), '.cache', 'tollgate-venv', 'bin', 'nanoidp');
  const proc = spawn(bin, ['--config', dir], {
    cwd: dir,
    env: { ...process.env, NANOIDP_PORT: String(port), NANOIDP_KEYS_DIR: join(dir, 'keys') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, proc, stop: () => proc.kill('SIGTERM') };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`nanoidp did not start:\n${log}`);
}

before(async () => { idp = await startIdp(); });
after(() => idp?.stop());

/** Nothing but 127.0.0.1 is fetched (nanoidp's pages load Bootstrap from a CDN). */
async function localOnly(ctx) {
  await ctx.route('**/*', (route) => {
    if (new URL(route.request().url()).hostname === '127.0.0.1') return route.continue();
    return route.abort();
  });
}

/** Pushes Tollgate's page errors and console errors onto `errors` (the IdP's
 * pages are not ours, and their blocked CDN requests are expected). With
 * allowRefused, refused requests (a 403 that the page shows) are not. */
function watch(page, errors, { allowRefused = false } = {}) {
  const ours = () => page.url().startsWith(server.url);
  page.on('pageerror', (e) => { if (ours()) errors.push(e.message); });
  page.on('console', (m) => {
    if (m.type() !== 'error' || !ours()) return;
    if (allowRefused && m.text().startsWith('Failed to load resource')) return;
    errors.push(`${page.url()}: ${m.text()}`);
  });
}

/** A fresh browser context (nanoidp remembers its own session) for one person. */
async function person(errors, options) {
  const ctx = await browser.newContext();
  await localOnly(ctx);
  const page = await ctx.newPage();
  watch(page, errors, options);
  return { ctx, page };
}

/** At nanoidp's form (OIDC "Authorize" or SAML "Sign In"): signs `user` in. */
async function idpLogin(page, user, password, screenshot) {
  const form = page.locator('form:has(input[name=password])');
  await form.locator('input[name=username]').fill(user);
  await form.locator('input[name=password]').fill(password);
  if (screenshot) await shot(page, screenshot);
  await form.locator('button[type=submit]').click();
}

/** From the login page: email, Continue, "Continue with …", the IdP's form. */
async function signInWithOidc(page, email, user, password, screenshots = {}) {
  await openHydrated(page, `${server.url}/login`, 'email');
  await page.getByTestId('email').fill(email);
  await page.getByTestId('continue').click();
  const sso = page.getByTestId('sso-continue');
  await sso.waitFor();
  assert.equal((await sso.textContent()).trim(), 'Continue with Corp IdP');
  if (screenshots.choice) await shot(page, screenshots.choice);
  await sso.click();
  await page.waitForURL((u) => u.href.startsWith(`${idp.url}/authorize`));
  await idpLogin(page, user, password, screenshots.idp);
}

/** The role the header's organization page shows the signed-in person. */
async function landedAs(page, org) {
  await page.waitForURL(`${server.url}/orgs/${org}`);
  const role = page.getByTestId('my-role');
  await role.waitFor();
  return (await role.textContent()).trim();
}

test('owner sets up OIDC and SAML; people sign in with mapped roles; SSO is enforced', async () => {
  // Console errors fail the test; the owner's and Pat's pages each expect
  // one refused request (the SAML form's error, Pat's refused password),
  // Carol's only refusals (of the owners' page).
  const errors = [];
  const ownerErrors = [];
  const patErrors = [];
  const { ctx: ownerCtx, page: owner, org } = await setUpOwner();
  await localOnly(ownerCtx);
  watch(owner, ownerErrors);
  // Pat has a password account (another domain) from before SSO is enforced.
  const invite = await call(owner, 'invite_member', { org_id: org, email: 'pat@other.test', role: 'member' });
  const pat = await person(patErrors);
  await pat.page.goto(invite.link);
  await call(pat.page, 'accept_invitation', {
    token: invite.link.split('/').pop(), name: 'Pat Other', password: 'pats secret pass',
  });
  await pat.ctx.clearCookies();

  // The owner finds the page in the navigation.
  await openHydrated(owner, `${server.url}/orgs/${org}`, 'my-role');
  await owner.getByRole('link', { name: 'SSO', exact: true }).click();
  await owner.getByTestId('sso-page').waitFor();
  await waitForWasm(owner);
  await shot(owner, 'sso-01-page-empty');

  // OIDC connection for corp.test.
  const oidc = owner.getByTestId('oidc-form');
  await owner.getByTestId('oidc-name').fill('Corp IdP');
  await owner.getByTestId('oidc-issuer').fill(idp.url);
  await owner.getByTestId('oidc-client-id').fill('tollgate');
  await owner.getByTestId('oidc-client-secret').fill('tollgate-secret');
  await owner.getByTestId('oidc-scopes').fill('openid email profile groups');
  await owner.getByTestId('oidc-domains').fill('corp.test');
  await owner.getByTestId('oidc-default-role').selectOption('viewer');
  await owner.getByTestId('oidc-mapping').fill('tollgate-admins => owner\nengineering => member');
  assert.equal(await owner.getByTestId('oidc-enabled').isChecked(), true);
  await shot(oidc, 'sso-02-oidc-form');
  await owner.getByTestId('save-oidc').click();
  const oidcRow = owner.getByTestId('connection-Corp IdP');
  await oidcRow.waitFor();
  assert.equal(await owner.getByTestId('oidc-name').inputValue(), '', 'the form is emptied once saved');
  assert.equal(
    (await oidcRow.getByTestId('callback-url').textContent()).trim(), `${server.url}/sso/oidc/callback`,
  );
  assert.match(await oidcRow.textContent(), /client tollgate · secret …cret/);
  assert.doesNotMatch(await owner.locator('main').textContent(), /tollgate-secret/);

  // SAML: an error names its field; then from nanoidp's metadata URL, no domain
  // (domains are unique per connection, and every nanoidp user is @corp.test).
  await owner.getByTestId('saml-name').fill('Corp SAML');
  await owner.getByTestId('save-saml').click();
  const samlError = owner.getByTestId('saml-error');
  await samlError.waitFor();
  assert.match(await samlError.textContent(), /^metadata_url: /);
  await owner.getByTestId('saml-metadata-url').fill(`${idp.url}/saml/metadata`);
  await owner.getByTestId('saml-default-role').selectOption('viewer');
  await owner.getByTestId('saml-mapping').fill('tollgate-admins => owner\nengineering => member');
  assert.match(await owner.getByTestId('saml-idp-initiated').textContent(), /IdP-initiated sign-in .* is not offered/);
  await owner.getByTestId('save-saml').click();
  const samlRow = owner.getByTestId('connection-Corp SAML');
  await samlRow.waitFor();
  await samlError.waitFor({ state: 'detached' });
  const acs = (await samlRow.getByTestId('callback-url').textContent()).trim();
  const samlId = acs.match(/\/sso\/([^/]+)\/acs$/)[1];
  assert.equal(
    await samlRow.getByTestId('sp-metadata').getAttribute('href'), `${server.url}/sso/${samlId}/metadata`,
  );
  assert.match(await samlRow.textContent(), /signing certificate stored/);
  await shot(owner, 'sso-03-connections');

  // An OIDC test sign-in (dave, engineering): the mapping's answer, nothing changed.
  await oidcRow.getByTestId('test-sign-in').click();
  await owner.waitForURL((u) => u.href.startsWith(`${idp.url}/authorize`));
  await idpLogin(owner, 'dave', 'dave-pw');
  await owner.getByRole('heading', { name: 'Test sign-in: Corp IdP' }).waitFor();
  assert.match(await owner.locator('main').textContent(), /Role the mapping gives\s*Member/);
  await shot(owner, 'sso-04-test-sign-in');
  await owner.getByRole('link', { name: 'Back' }).click();
  await owner.getByTestId('sso-page').waitFor();

  // Carol signs in through OIDC from the login page: a new member.
  const carolErrors = [];
  const carol = await person(carolErrors);
  await signInWithOidc(carol.page, 'carol@corp.test', 'carol', 'carol-pw', {
    choice: 'sso-05-login-continue-with-idp', idp: 'sso-06-idp-login',
  });
  assert.equal(await landedAs(carol.page, org), 'Member');
  await shot(carol.page, 'sso-07-carol-signed-in');
  // The page is for owners: no link for a member, and no forms if she goes there.
  assert.equal(await carol.page.getByRole('link', { name: 'SSO', exact: true }).count(), 0);
  await carol.page.goto(`${server.url}/orgs/${org}/sso`);
  const denied = carol.page.getByTestId('sso-page').getByRole('alert');
  await denied.waitFor();
  assert.match(await denied.textContent(), /^forbidden: /);
  assert.equal(await carol.page.getByTestId('oidc-form').count(), 0);

  // Alice signs in through SAML (started at the connection): tollgate-admins -> owner.
  const alice = await person(errors);
  await alice.page.goto(`${server.url}/sso/${samlId}/start`);
  await alice.page.waitForURL((u) => u.href.startsWith(`${idp.url}/saml/sso`));
  await idpLogin(alice.page, 'alice', 'alice-pw', 'sso-08-idp-saml-login');
  assert.equal(await landedAs(alice.page, org), 'Owner');
  await shot(alice.page, 'sso-09-alice-signed-in');

  // The owner edits the OIDC connection without its secret (kept), then Bob
  // (sales, no mapped group) signs in through it with the default role.
  await waitForWasm(owner);
  await oidcRow.getByTestId('edit-connection').click();
  await owner.getByRole('heading', { name: 'Edit OIDC connection “Corp IdP”' }).waitFor();
  assert.equal(await owner.getByTestId('oidc-issuer').inputValue(), idp.url);
  assert.equal(await owner.getByTestId('oidc-mapping').inputValue(), 'tollgate-admins => owner\nengineering => member');
  assert.match(await oidc.textContent(), /Client secret \(empty: keep …cret\)/);
  await owner.getByTestId('oidc-name').fill('Corp IdP');
  await owner.getByTestId('save-oidc').click();
  await owner.getByRole('heading', { name: 'Add an OIDC connection' }).waitFor();
  assert.equal(await owner.getByTestId('oidc-error').count(), 0);
  const bob = await person(errors);
  await signInWithOidc(bob.page, 'bob@corp.test', 'bob', 'bob-pw');
  assert.equal(await landedAs(bob.page, org), 'Viewer');

  const roles = Object.fromEntries(
    (await call(owner, 'list_members', { org_id: org })).map((m) => [m.email, m.role]),
  );
  assert.deepEqual(roles, {
    'ada@example.com': 'owner',
    'pat@other.test': 'member',
    'carol@corp.test': 'member',
    'alice@corp.test': 'owner',
    'bob@corp.test': 'viewer',
  });
  await owner.goto(`${server.url}/orgs/${org}/members`);
  await owner.locator('td', { hasText: 'bob@corp.test' }).first().waitFor();
  await shot(owner, 'sso-10-members');

  // A SCIM token for the IdP, shown once; one request with it is listed.
  await openHydrated(owner, `${server.url}/orgs/${org}/sso`, 'create-scim-token');
  await owner.getByTestId('scim-token-name').fill('okta-scim');
  await owner.getByTestId('scim-connection').selectOption({ label: 'Corp IdP' });
  await owner.getByTestId('create-scim-token').click();
  const token = (await owner.getByTestId('scim-token').textContent()).trim();
  const base = (await owner.getByTestId('scim-base-url').textContent()).trim();
  assert.equal(base, `${server.url}/scim/v2`);
  await shot(owner, 'sso-11-scim-token');
  await owner.getByRole('button', { name: 'I have stored it' }).click();
  await owner.getByTestId('scim-token-reveal').waitFor({ state: 'detached' });
  const tokenRow = owner.getByTestId('scim-token-okta-scim');
  await tokenRow.waitFor();
  assert.equal(await tokenRow.locator('td').nth(2).textContent(), 'Corp IdP');
  const users = await fetch(`${base}/Users`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(users.status, 200);
  assert.equal(typeof (await users.json()).totalResults, 'number');

  // Enforce SSO, the owner as break-glass.
  await owner.reload();
  await owner.getByTestId('scim-events').waitFor();
  await waitForWasm(owner);
  const event = owner.getByTestId('scim-events').locator('tbody tr').first();
  assert.deepEqual((await event.locator('td').allTextContents()).slice(1, 4), ['GET', '/scim/v2/Users', '200']);
  await owner.getByTestId('sso-enforced').check();
  await owner.getByTestId('break-glass').selectOption({ label: 'ada@example.com' });
  await owner.getByTestId('save-enforcement').click();
  await owner.getByTestId('enforcement-status').filter({ hasText: /^Enforced/ }).waitFor();
  assert.match(await owner.getByTestId('enforcement-status').textContent(), /ada@example\.com keeps password sign-in/);
  await shot(owner, 'sso-12-page-enforced');

  // Pat's password is refused: the organization requires SSO.
  await openHydrated(pat.page, `${server.url}/login`, 'email');
  await pat.page.getByTestId('email').fill('pat@other.test');
  await pat.page.getByTestId('continue').click();
  await pat.page.getByTestId('password').fill('pats secret pass');
  await pat.page.getByRole('button', { name: 'Sign in' }).click();
  const refusal = pat.page.getByRole('alert');
  await refusal.waitFor();
  assert.match(await refusal.textContent(), /requires single sign-on/);
  assert.equal(new URL(pat.page.url()).pathname, '/login');
  await shot(pat.page, 'sso-13-password-refused');

  // A corp.test person is offered the IdP first, a password only on request.
  const dave = await person(errors);
  await openHydrated(dave.page, `${server.url}/login`, 'email');
  await dave.page.getByTestId('email').fill('dave@corp.test');
  await dave.page.getByTestId('continue').click();
  await dave.page.getByTestId('sso-continue').waitFor();
  assert.equal(await dave.page.getByTestId('password').isVisible(), false);
  await dave.page.getByTestId('use-password').click();
  await dave.page.getByTestId('password').waitFor();
  await shot(dave.page, 'sso-14-password-instead');

  // The break-glass owner still signs in with a password.
  const ada = await person(errors);
  await openHydrated(ada.page, `${server.url}/login`, 'email');
  await ada.page.getByTestId('email').fill('ada@example.com');
  await ada.page.getByTestId('continue').click();
  await ada.page.getByTestId('password').fill('correct horse battery');
  await ada.page.getByRole('button', { name: 'Sign in' }).click();
  assert.equal(await landedAs(ada.page, org), 'Owner');

  // A failed single sign-on comes back to the login page with its reason.
  await dave.page.goto(`${server.url}/sso/no-such-connection/start`);
  await dave.page.waitForURL((u) => u.pathname === '/login' && u.searchParams.has('sso_error'));
  const ssoError = dave.page.getByTestId('sso-error');
  await ssoError.waitFor();
  assert.match(await ssoError.textContent(), /does not exist or is disabled/);
  await shot(dave.page, 'sso-15-sso-error');

  assert.deepEqual(errors, [], 'no uncaught or console errors in Tollgate pages');
  const refusedOnly = (list, status) => list.length === 1 && list[0].endsWith(`Failed to load resource: the server responded with a status of ${status}`);
  assert.ok(refusedOnly(ownerErrors, '400 (Bad Request)'), ownerErrors.join('\n'));
  assert.ok(refusedOnly(patErrors, '403 (Forbidden)'), patErrors.join('\n'));
  assert.ok(carolErrors.every((e) => e.endsWith('status of 403 (Forbidden)')), carolErrors.join('\n'));
  for (const p of [ownerCtx, pat.ctx, carol.ctx, alice.ctx, bob.ctx, dave.ctx, ada.ctx]) await p.close();
});
