// Prompts: an owner saves two versions of a prompt on the Prompts page,
// labels one, compares them, and lets a project use the prompt from its
// settings; a key of that project is then served the labelled version.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useServerAndBrowser, server, shot, call, setUpOwner, openHydrated } from './helpers.mjs';

useServerAndBrowser();

test('an owner versions a prompt, compares versions and lets a project use it', async () => {
  // A refused save logs its 400 in the console: allowed here.
  const { page, errors, org } = await setUpOwner({ allowRefused: true });
  const { id: project } = await call(page, 'create_project', { org_id: org, name: 'Support' });

  await openHydrated(page, `${server.url}/orgs/${org}/prompts`, 'prompt-form');
  await page.getByRole('link', { name: 'Prompts' }).first().waitFor();
  const form = page.getByTestId('prompt-form');
  await form.getByLabel('Prompt id').fill('support/triage');
  await form.getByLabel('Label this version (optional)').fill('production');
  await form.getByLabel('Description').fill('Triage a ticket');
  await form.getByLabel('Messages').fill('system: You answer for {{ company }}.\nuser: Ticket from {{ customer }}: {{ ticket }}');
  await form.getByLabel('Default model (empty: the request\'s)').fill('mock/echo');
  await form.getByRole('button', { name: 'Save version' }).click();
  // A loaded CI machine once saw no answer here within 30 s: wait longer,
  // and say what the page showed if none comes.
  await page.getByText('Saved support/triage version 1.').waitFor({ timeout: 60_000 }).catch(async (e) => {
    const shown = await page.locator('main').innerText().catch(() => '(no main)');
    throw new Error(`${e.message}\npage errors: ${JSON.stringify(errors)}\npage text: ${shown.slice(0, 2000)}`);
  });
  await page.getByTestId('prompt-history').waitFor();

  // A bad message is refused, naming it.
  await form.getByLabel('Label this version (optional)').fill('');
  await form.getByLabel('Messages').fill('system: fine\nuser:');
  await form.getByRole('button', { name: 'Save version' }).click();
  await page.getByRole('alert').filter({ hasText: 'message 2 (user) is empty' }).waitFor();

  await form.getByLabel('Messages').fill('system: You answer for {{ company }}, briefly.\nuser: {{ customer }} (v2) says: {{ ticket }}');
  await form.getByRole('button', { name: 'Save version' }).click();
  await page.getByText('Saved support/triage version 2.').waitFor();
  const versions = page.getByTestId('prompt-versions');
  await versions.locator('tbody tr').nth(1).waitFor();
  assert.equal(await versions.locator('tbody tr').count(), 2);
  assert.match(await versions.locator('tbody tr').nth(1).innerText(), /v1\s+production/);
  const diff = page.getByTestId('prompt-diff');
  await diff.locator('.added').first().waitFor();
  assert.match(await diff.locator('.added').first().innerText(), /\+ system: You answer for \{\{ company \}\}, briefly\./);
  assert.match(await diff.locator('.removed').first().innerText(), /- system: You answer for \{\{ company \}\}\./);
  await shot(page, 'prompts-01-history');

  // The project's settings let its keys use the prompt.
  await openHydrated(page, `${server.url}/orgs/${org}/projects/${project}`, 'project-prompts');
  const choice = page.getByTestId('project-prompts');
  await choice.getByLabel('support/triage').check();
  await choice.getByRole('button', { name: 'Save prompts' }).click();
  await choice.getByText('Saved.').waitFor();
  await shot(page, 'prompts-02-project');

  const issued = await call(page, 'create_key', {
    org_id: org, project_id: project, name: 'app', tpm: '', rpm: '', max_budget: '', budget_reset: 'never', expires_at: '', tags: '',
  });
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${issued.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [], prompt_id: 'support/triage', prompt_variables: { company: 'Acme', customer: 'Ada', ticket: 'help' } }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.choices[0].message.content, 'Ticket from Ada: help', 'the production label (v1) serves');
  assert.deepEqual(errors, []);
});
