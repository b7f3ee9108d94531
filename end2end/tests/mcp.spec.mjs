// MCP servers: an owner registers a server on the MCP servers page (a bad
// URL is refused, naming the field), a project's settings let its keys use
// one of its tools, and a key of that project then sees only that tool
// through /mcp/{server}.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { useServerAndBrowser, server, shot, call, setUpOwner, openHydrated } from './helpers.mjs';

// The MCP server runs on this machine: the gateway may call it.
useServerAndBrowser({ env: { TOLLGATE_ALLOW_PRIVATE_NETWORKS: 'true' } });

/** A small MCP server (JSON answers, no session) with tools echo and secret. */
function fakeMcp() {
  return new Promise((resolve) => {
    const s = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const msg = JSON.parse(body || '{}');
        if (msg.id === undefined) { res.writeHead(202); res.end(); return; }
        const result = msg.method === 'tools/list'
          ? { tools: [{ name: 'echo', inputSchema: { type: 'object' } }, { name: 'secret', inputSchema: { type: 'object' } }] }
          : msg.method === 'tools/call'
            ? { content: [{ type: 'text', text: JSON.stringify(msg.params.arguments) }] }
            : { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'fake', version: '1' } };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }));
      });
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

test('an owner registers an MCP server and a project lets its keys use one tool', async () => {
  const upstream = await fakeMcp();
  const upstreamUrl = `http://127.0.0.1:${upstream.address().port}/mcp`;
  // The refused save logs its 400 in the console: allowed here.
  const { page, errors, org } = await setUpOwner({ allowRefused: true });
  const { id: project } = await call(page, 'create_project', { org_id: org, name: 'Agents' });

  await openHydrated(page, `${server.url}/orgs/${org}/mcp`, 'mcp-form');
  const form = page.getByTestId('mcp-form');
  await form.getByLabel('Name').fill('demo');
  await form.getByLabel('URL (Streamable HTTP)').fill('ftp://nope');
  await form.getByRole('button', { name: 'Save server' }).click();
  await page.getByRole('alert').filter({ hasText: 'url:' }).waitFor();

  await form.getByLabel('URL (Streamable HTTP)').fill(upstreamUrl);
  await form.getByLabel('Credential (empty: keep the stored one; - removes it)').fill('Bearer upstream-secret-1234');
  await form.getByRole('button', { name: 'Save server' }).click();
  const table = page.getByTestId('mcp-servers');
  await table.getByText('/mcp/demo').waitFor();
  const row = await table.locator('tbody tr').first().innerText();
  assert.match(row, /Authorization …1234/, 'only the credential\'s hint is shown');
  assert.doesNotMatch(await page.content(), /upstream-secret/);
  await shot(page, 'mcp-01-servers');

  await openHydrated(page, `${server.url}/orgs/${org}/projects/${project}`, 'project-mcp');
  const card = page.getByTestId('project-mcp');
  await card.getByLabel('Servers and tools').fill('demo: echo');
  await card.getByRole('button', { name: 'Save MCP access' }).click();
  await card.getByText('Saved.').waitFor();
  await shot(page, 'mcp-02-project');

  const issued = await call(page, 'create_key', {
    org_id: org, project_id: project, name: 'agent', tpm: '', rpm: '', max_budget: '', budget_reset: 'never', expires_at: '', tags: '',
  });
  const rpc = async (message) => {
    const res = await fetch(`${server.url}/mcp/demo`, {
      method: 'POST',
      headers: { authorization: `Bearer ${issued.token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', ...message }),
    });
    return [res.status, await res.json()];
  };
  const [st, list] = await rpc({ id: 1, method: 'tools/list' });
  assert.equal(st, 200, JSON.stringify(list));
  assert.deepEqual(list.result.tools.map((t) => t.name), ['echo']);
  const [, echoed] = await rpc({ id: 2, method: 'tools/call', params: { name: 'echo', arguments: { say: 'hi' } } });
  assert.equal(echoed.result.content[0].text, '{"say":"hi"}');
  const [, refused] = await rpc({ id: 3, method: 'tools/call', params: { name: 'secret', arguments: {} } });
  assert.equal(refused.error.message, "the project does not allow the tool 'secret' of the MCP server 'demo'");
  upstream.close();
  assert.deepEqual(errors, []);
});
