// The console's static assets: content-hashed names cached for a year as
// immutable, their build-time brotli and gzip twins by Accept-Encoding,
// pages never kept; ECharts fetched only by a page that draws a chart; a
// second visit asks the network for no asset. (Sizes and times: scripts/weight.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { server, browser, useServerAndBrowser, setUpOwner, openHydrated, call, shot, collectErrors } from './helpers.mjs';

// The owner set up by the first test; the second signs in afresh (a cold cache).
let owned;

useServerAndBrowser();

const IMMUTABLE = 'public, max-age=31536000, immutable';

test('hashed assets are immutable and sent as brotli or gzip; pages and plain names are asked again', async () => {
  owned = await setUpOwner();
  const { ctx, page, org } = owned;
  const res = await page.request.get(`${server.url}/orgs/${org}/projects`);
  assert.equal(res.status(), 200);
  assert.equal(res.headers()['cache-control'], 'no-cache, private');
  const html = await res.text();
  const find = (re) => {
    const m = html.match(re);
    assert.ok(m, `the page names ${re}`);
    return m[0];
  };
  const assets = [
    find(/\/pkg\/tollgate\.[0-9a-f]{16}\.wasm/),
    find(/\/pkg\/tollgate\.[0-9a-f]{16}\.js/),
    find(/\/pkg\/tollgate\.[0-9a-f]{16}\.css/),
    find(/\/pkg\/echarts\.[0-9a-f]{16}\.js/),
    find(/\/pkg\/favicon\.[0-9a-f]{16}\.svg/),
  ];
  // The old unhashed script tag is gone: no page loads ECharts by itself.
  assert.ok(!/<script[^>]*echarts/.test(html), 'no script tag for ECharts in the page');

  for (const path of assets) {
    const plain = await page.request.get(server.url + path, { headers: { 'accept-encoding': 'identity' } });
    assert.equal(plain.status(), 200, path);
    assert.equal(plain.headers()['cache-control'], IMMUTABLE, path);
    assert.equal(plain.headers()['content-encoding'], undefined, path);
    const body = await plain.body();
    for (const encoding of ['br', 'gzip']) {
      const r = await page.request.get(server.url + path, { headers: { 'accept-encoding': encoding } });
      assert.equal(r.status(), 200, `${path} ${encoding}`);
      if (body.length < 1000) continue; // small files may have no smaller twin
      assert.equal(r.headers()['content-encoding'], encoding, `${path} ${encoding}`);
      assert.equal(r.headers()['cache-control'], IMMUTABLE, `${path} ${encoding}`);
      assert.match(r.headers()['vary'] ?? '', /accept-encoding/i, `${path} ${encoding}`);
      assert.ok((await r.body()).equals(body), `${path}: the ${encoding} twin decodes to the file`);
    }
  }
  // The wasm's type lets the browser compile it while it streams.
  const wasm = await page.request.get(server.url + assets[0], { headers: { 'accept-encoding': 'br' } });
  assert.equal(wasm.headers()['content-type'], 'application/wasm');

  // A name that stays across builds is revalidated: 304 when unchanged.
  const css = await page.request.get(`${server.url}/pkg/tollgate.css`);
  assert.equal(css.status(), 200);
  assert.equal(css.headers()['cache-control'], 'no-cache');
  const again = await page.request.get(`${server.url}/pkg/tollgate.css`, {
    headers: { 'if-modified-since': css.headers()['last-modified'] },
  });
  assert.equal(again.status(), 304);
  // A file that is not there is the console's 404 page.
  const missing = await page.request.get(`${server.url}/pkg/tollgate.0000000000000000.wasm`);
  assert.equal(missing.status(), 404);
  await ctx.close();
});

test('ECharts is fetched by the usage page, not by the projects page; a warm load asks for no asset', async () => {
  const org = owned.org;
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const errors = [];
  collectErrors(page, errors);
  await page.goto(server.url + '/login');
  await call(page, 'sign_in', { email: 'ada@example.com', password: 'correct horse battery' });
  await call(page, 'create_project', { org_id: org, name: 'Production' });
  const fetched = [];
  ctx.on('request', (r) => fetched.push(new URL(r.url()).pathname));

  await openHydrated(page, `${server.url}/orgs/${org}/projects`, 'project-name');
  assert.ok(fetched.some((p) => p.endsWith('.wasm')), 'the bundle was loaded');
  assert.ok(!fetched.some((p) => p.includes('echarts')), `no ECharts on the projects page: ${fetched.join(' ')}`);

  // A second visit (a new tab, same browser): every asset from the cache.
  const second = await ctx.newPage();
  const cdp = await ctx.newCDPSession(second);
  await cdp.send('Network.enable');
  const sent = new Map();
  cdp.on('Network.requestWillBeSent', (e) => sent.set(e.requestId, { path: new URL(e.request.url).pathname, type: e.type }));
  cdp.on('Network.requestServedFromCache', (e) => sent.delete(e.requestId));
  cdp.on('Network.responseReceived', (e) => {
    if (e.response.fromDiskCache || e.response.fromPrefetchCache) sent.delete(e.requestId);
  });
  await openHydrated(second, `${server.url}/orgs/${org}/projects`, 'project-name');
  const toNetwork = [...sent.values()].filter((r) => r.type !== 'Document' && !r.path.startsWith('/api/'));
  assert.deepEqual(toNetwork, [], 'assets the warm load fetched from the network');
  await second.close();

  // The usage page draws its charts with ECharts, fetched once for all three.
  fetched.length = 0;
  await openHydrated(page, `${server.url}/orgs/${org}/usage`, 'usage-totals');
  for (const id of ['chart-spend', 'chart-tokens', 'chart-projects']) {
    await page.locator(`#${id} canvas, #${id} svg`).first().waitFor({ timeout: 15000 });
  }
  assert.equal(fetched.filter((p) => /^\/pkg\/echarts\.[0-9a-f]{16}\.js$/.test(p)).length, 1, fetched.join(' '));
  await shot(page, 'assets-usage-charts');
  assert.deepEqual(errors, []);
  await ctx.close();
});
