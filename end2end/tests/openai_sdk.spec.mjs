// The official `openai` npm package, unchanged, against Tollgate's /v1 and
// the built-in mock provider: chat, streaming (with and without
// stream_options.include_usage), embeddings (the SDK asks for base64 by
// default and decodes it), models; and the refusals an app meets raise the
// SDK's own error classes with Tollgate's error code: a wrong, a deleted and
// a revoked key (401), a model outside the key's list (403), an unknown model
// (404), RPM 1 used twice (429), a spent budget (402).
//
// No browser: the owner sets Tollgate up through server functions with a
// session cookie, makes a provisioning key and a priced model, and the
// project and its keys are made as automation makes them, through the REST
// API under /api/v1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer } from '../server.mjs';

let server;
let org;
let cookie = '';
const keys = {};

before(async () => {
  server = await startServer();
  org = (await console_('setup', {
    email: 'ada@example.com', name: 'Ada Owner', password: 'correct horse battery', org_name: 'Acme AI',
  })).org_id;
  // 10 USD per million tokens in and out: 10 micro-USD a token.
  await console_('upsert_model', {
    org_id: org, id: 'mock/priced', provider: 'mock', upstream: 'echo',
    input_price: '10', output_price: '10', context_window: '128000',
  });
  const pk = (await console_('create_provisioning_key', { org_id: org, name: 'sdk-test' })).token;

  const project = await rest(pk, 'POST', '/api/v1/projects', {
    name: 'SDK', models: ['mock/echo', 'mock/fast', 'mock/embed', 'mock/priced'],
  });
  const key = async (name, limits) => (await rest(pk, 'POST', '/api/v1/keys', { project: project.id, name, ...limits }));
  keys.ok = (await key('app', { models: ['mock/echo', 'mock/fast', 'mock/embed'] })).token;
  keys.limited = (await key('limited', { models: ['mock/echo'], rpm_limit: 1 })).token;
  // $0.0005: 50 tokens of mock/priced, a few small requests.
  keys.broke = (await key('broke', { models: ['mock/priced'], max_budget: 0.0005, budget_reset: 'never' })).token;
  const deleted = await key('deleted', { models: ['mock/echo'] });
  await rest(pk, 'DELETE', `/api/v1/keys/${deleted.key.id}`);
  keys.deleted = deleted.token;
  // The REST API deletes a key; revoking one is the console's.
  const revoked = await console_('create_key', {
    org_id: org, project_id: project.id, name: 'revoked', max_budget: '', budget_reset: 'never',
    tpm: '', rpm: '', expires_at: '', tags: '', 'models[0]': 'mock/echo',
  });
  await console_('revoke_key', { org_id: org, key_id: revoked.key.id });
  keys.revoked = revoked.token;
});

after(() => server?.stop());

/** Calls a console server function with the owner's session (kept from setup). */
async function console_(name, form) {
  const res = await fetch(`${server.url}/api/console/${name}`, {
    method: 'POST',
    headers: { cookie },
    body: new URLSearchParams(form),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `${name}: ${JSON.stringify(body)}`);
  const set = res.headers.getSetCookie().map((c) => c.split(';')[0]);
  if (set.length) cookie = set.join('; ');
  return body;
}

/** A REST call with the provisioning key; fails unless it answers 2xx. */
async function rest(pk, method, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${pk}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// No retries: a refusal must surface as the SDK's error at once (it retries
// 429 and 5xx by default).
const client = (apiKey) => new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });

const PROMPT = 'Tell me three things about toll roads, please';

test('chat completions: an answer and its usage', async () => {
  const chat = await client(keys.ok).chat.completions.create({
    model: 'mock/echo',
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 64,
  });
  const text = chat.choices[0].message.content;
  assert.ok(text.length > 0);
  assert.equal(text, PROMPT, 'mock/echo repeats the last user message');
  assert.equal(chat.choices[0].message.role, 'assistant');
  assert.equal(chat.choices[0].finish_reason, 'stop');
  assert.equal(chat.model, 'mock/echo');
  assert.ok(chat.usage.prompt_tokens > 0, JSON.stringify(chat.usage));
  assert.ok(chat.usage.completion_tokens > 0, JSON.stringify(chat.usage));
  assert.equal(chat.usage.total_tokens, chat.usage.prompt_tokens + chat.usage.completion_tokens);
  assert.ok(chat._request_id, 'x-request-id names the request');
});

test('streaming: the deltas join to the non-streamed answer; usage only when asked', async () => {
  const ok = client(keys.ok);
  for (const model of ['mock/echo', 'mock/fast']) {
    const request = { model, messages: [{ role: 'user', content: PROMPT }], max_tokens: 64 };
    const whole = await ok.chat.completions.create(request);

    // Without stream_options: text chunks only, no usage chunk (as OpenAI).
    let pieces = [];
    let chunks = 0;
    for await (const chunk of await ok.chat.completions.create({ ...request, stream: true })) {
      chunks += 1;
      assert.equal(chunk.object, 'chat.completion.chunk');
      assert.ok(!chunk.usage, `no usage unless asked: ${JSON.stringify(chunk)}`);
      pieces.push(chunk.choices[0]?.delta?.content ?? '');
    }
    assert.ok(chunks > 2, `${model}: ${chunks} chunks`);
    assert.equal(pieces.join(''), whole.choices[0].message.content, model);

    // With include_usage: a last chunk with no choices and the usage.
    pieces = [];
    const usages = [];
    let last;
    for await (const chunk of await ok.chat.completions.create({
      ...request, stream: true, stream_options: { include_usage: true },
    })) {
      last = chunk;
      if (chunk.usage) usages.push(chunk);
      else pieces.push(chunk.choices[0]?.delta?.content ?? '');
    }
    assert.equal(pieces.join(''), whole.choices[0].message.content, model);
    assert.equal(usages.length, 1, `${model}: one usage chunk`);
    assert.equal(usages[0], last, 'the usage chunk comes last');
    assert.deepEqual(last.choices, []);
    assert.deepEqual(
      { prompt: last.usage.prompt_tokens, completion: last.usage.completion_tokens, total: last.usage.total_tokens },
      { prompt: whole.usage.prompt_tokens, completion: whole.usage.completion_tokens, total: whole.usage.total_tokens },
      model,
    );
    assert.ok(last.usage.completion_tokens > 0);
  }
});

test('embeddings: base64 (the SDK default) and float vectors agree', async () => {
  const ok = client(keys.ok);
  const input = ['one', 'two', 'one'];
  const b64 = await ok.embeddings.create({ model: 'mock/embed', input });
  assert.equal(b64.data.length, 3);
  const vectors = b64.data.map((d) => d.embedding);
  for (const v of vectors) {
    assert.ok(Array.isArray(v) && v.length > 0, JSON.stringify(v));
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-4, `a unit vector: norm ${norm}`);
  }
  assert.deepEqual(vectors[0], vectors[2], 'the same text, the same vector');
  assert.notDeepEqual(vectors[0], vectors[1]);
  assert.deepEqual(b64.data.map((d) => d.index), [0, 1, 2]);
  assert.ok(b64.usage.prompt_tokens > 0, JSON.stringify(b64.usage));

  const float = await ok.embeddings.create({ model: 'mock/embed', input, encoding_format: 'float' });
  for (const [i, d] of float.data.entries()) {
    assert.equal(d.embedding.length, vectors[i].length);
    d.embedding.forEach((x, j) => assert.ok(Math.abs(x - vectors[i][j]) < 1e-6, `${i}[${j}]`));
  }
});

test("models.list: the key's models", async () => {
  const ids = [];
  for await (const m of client(keys.ok).models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  assert.deepEqual(ids.sort(), ['mock/echo', 'mock/embed', 'mock/fast']);
  const limited = [];
  for await (const m of client(keys.limited).models.list()) limited.push(m.id);
  assert.deepEqual(limited, ['mock/echo']);
});

/** The error `call()` rejects with, checked to be an `errorClass` with
 * `status` and Tollgate's `code` (in .code and in .error, the body's error). */
async function refusal(call, errorClass, status, code) {
  let err;
  await assert.rejects(call, (e) => { err = e; return true; });
  assert.ok(err instanceof errorClass, `${err?.constructor?.name}: ${err}`);
  assert.ok(err instanceof OpenAI.APIError);
  assert.equal(err.status, status, String(err));
  assert.equal(err.code, code, String(err));
  assert.equal(err.error?.code, code, JSON.stringify(err.error));
  assert.ok(err.error.message && err.message.includes(err.error.message), err.message);
  return err;
}

const hello = (model = 'mock/echo') => ({ model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 5 });

test('refusals raise the SDK error classes with the server error code', async () => {
  // 401: a token that is no key, a deleted key, a revoked key.
  let e = await refusal(client('sk-tg-not-a-real-key').chat.completions.create(hello()),
    OpenAI.AuthenticationError, 401, 'invalid_api_key');
  assert.equal(e.type, 'authentication_error');
  await refusal(client(keys.deleted).chat.completions.create(hello()),
    OpenAI.AuthenticationError, 401, 'invalid_api_key');
  e = await refusal(client(keys.revoked).chat.completions.create(hello()),
    OpenAI.AuthenticationError, 401, 'key_revoked');
  assert.match(e.message, /revoked/);
  await refusal(client(keys.revoked).models.list(), OpenAI.AuthenticationError, 401, 'key_revoked');

  // 403: the project allows mock/priced, the key does not.
  e = await refusal(client(keys.ok).chat.completions.create(hello('mock/priced')),
    OpenAI.PermissionDeniedError, 403, 'model_not_allowed');
  assert.equal(e.type, 'permission_error');
  assert.match(e.message, /mock\/priced/);
  await refusal(client(keys.ok).embeddings.create({ model: 'mock/priced', input: 'x' }),
    OpenAI.PermissionDeniedError, 403, 'model_not_allowed');

  // 404: no such model in the organization's catalogue.
  e = await refusal(client(keys.ok).chat.completions.create(hello('gpt-nonexistent')),
    OpenAI.NotFoundError, 404, 'model_not_found');
  assert.equal(e.param, 'model');

  // 429: RPM 1, the second request of the minute.
  const limited = client(keys.limited);
  const first = await limited.chat.completions.create(hello());
  assert.equal(first.choices[0].message.content, 'hello');
  e = await refusal(limited.chat.completions.create(hello()), OpenAI.RateLimitError, 429, 'rate_limit_exceeded');
  assert.equal(e.type, 'rate_limit_error');
  assert.ok(Number(e.headers.get('retry-after')) > 0, `retry-after: ${e.headers.get('retry-after')}`);
  assert.equal(e.headers.get('x-ratelimit-remaining-requests'), '0');

  // 402: spend the key's $0.0005 budget on mock/priced until it refuses.
  const broke = client(keys.broke);
  let admitted = 0;
  for (; admitted < 20; admitted++) {
    try {
      await broke.chat.completions.create(hello('mock/priced'));
    } catch (err) {
      e = err;
      break;
    }
  }
  assert.ok(admitted >= 1 && admitted < 20, `admitted ${admitted} before a refusal`);
  assert.ok(e instanceof OpenAI.APIError, String(e));
  assert.equal(e.status, 402, String(e));
  assert.equal(e.code, 'key_budget_exceeded', String(e));
  assert.equal(e.error.code, 'key_budget_exceeded');
  assert.equal(e.type, 'budget_exceeded');
  assert.match(e.message, /budget/);
  await refusal(broke.chat.completions.create(hello('mock/priced')), OpenAI.APIError, 402, 'key_budget_exceeded');
});
