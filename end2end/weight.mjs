// Console weight: what a signed-in owner's browser downloads for a console
// page, and how long until the page is usable, on a throttled link
// (10 Mbit/s each way, 40 ms latency: Chrome DevTools Protocol's
// Network.emulateNetworkConditions) in headless Chromium. A benchmark that
// prints figures; it asserts nothing about speed.
//
//   scripts/weight                       # builds the release bundle (scripts/run's), then this
//   TOLLGATE_BIN=… TOLLGATE_SITE_ROOT=… node end2end/weight.mjs [--runs N] [--json]
//
// Cold: a fresh browser context (empty HTTP cache, new connections) holding
// only the session cookie. Warm: a new tab in the same context afterwards.
// "Usable" is the moment hydration has run (the console answers clicks):
// the first task after the wasm module was instantiated; Leptos's hydration
// script calls hydrate() in the microtasks that follow the instantiation.
// Bytes are what crossed the wire (CDP's encodedDataLength: headers and
// compressed bodies).
import { chromium } from 'playwright-core';
import { startServer, chromiumArgs } from './server.mjs';

const args = process.argv.slice(2);
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : 5;
const asJson = args.includes('--json');

const LINK = {
  offline: false,
  latency: 40, // ms, added to each request (DevTools' model of a round trip)
  downloadThroughput: 10_000_000 / 8, // bytes/s
  uploadThroughput: 10_000_000 / 8,
};

// Marks the first task after a wasm instantiation settles (Leptos hydrates
// in the microtasks before it).
const HYDRATION_MARK = `(() => {
  const mark = () => setTimeout(() => { if (window.__usableAt === undefined) window.__usableAt = performance.now(); }, 0);
  for (const name of ['instantiateStreaming', 'instantiate']) {
    const original = WebAssembly[name];
    WebAssembly[name] = function (...a) {
      const p = original.apply(this, a);
      p.then(mark, () => {});
      return p;
    };
  }
})();`;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** One page load in `page`, throttled; returns its figures. */
async function load(ctx, page, url) {
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: false });
  await cdp.send('Network.emulateNetworkConditions', LINK);
  const reqs = new Map();
  const get = (id) => {
    if (!reqs.has(id)) reqs.set(id, { id, bytes: 0, fromCache: false, done: false });
    return reqs.get(id);
  };
  cdp.on('Network.requestWillBeSent', (e) => Object.assign(get(e.requestId), { url: e.request.url, type: e.type }));
  cdp.on('Network.requestServedFromCache', (e) => { get(e.requestId).fromCache = true; });
  cdp.on('Network.responseReceived', (e) => {
    const r = get(e.requestId);
    r.status = e.response.status;
    r.type = e.type;
    r.encoding = e.response.headers['content-encoding'] ?? e.response.headers['Content-Encoding'];
    if (e.response.fromDiskCache || e.response.fromPrefetchCache || e.response.fromServiceWorker) r.fromCache = true;
  });
  cdp.on('Network.loadingFinished', (e) => { const r = get(e.requestId); r.bytes = e.encodedDataLength; r.done = true; });
  cdp.on('Network.loadingFailed', (e) => { const r = get(e.requestId); r.failed = e.errorText; r.done = true; });

  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.__usableAt !== undefined, null, { timeout: 60_000 });
  // A page with charts: also when ECharts has drawn every one (polled each frame).
  const chartsAt = await page.waitForFunction(() => {
    const charts = [...document.querySelectorAll('.chart')];
    return charts.every((c) => c.querySelector('canvas, svg')) && performance.now();
  }, null, { timeout: 60_000, polling: 'raf' }).then((h) => h.jsonValue());
  // Whatever the page fetches after hydration counts too: wait until the
  // network has been quiet for half a second.
  let quietSince = Date.now();
  let lastCount = reqs.size;
  while (Date.now() - quietSince < 500) {
    await new Promise((r) => setTimeout(r, 50));
    const pending = [...reqs.values()].some((r) => !r.done);
    if (pending || reqs.size !== lastCount) { quietSince = Date.now(); lastCount = reqs.size; }
  }
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return { usable: window.__usableAt, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, charts: document.querySelector('.chart') !== null };
  });
  await cdp.detach();
  if (errors.length) throw new Error(`errors on ${url}:\n${errors.join('\n')}`);
  const all = [...reqs.values()].filter((r) => r.url && !r.url.startsWith('data:'));
  const network = all.filter((r) => !r.fromCache);
  const isAsset = (r) => r.type !== 'Document' && !new URL(r.url).pathname.startsWith('/api/');
  return {
    usable_ms: Math.round(timing.usable),
    charts_ms: timing.charts ? Math.round(chartsAt) : null,
    dom_content_loaded_ms: Math.round(timing.dcl),
    load_ms: Math.round(timing.load),
    bytes: all.reduce((s, r) => s + r.bytes, 0),
    requests: all.length,
    network_requests: network.length,
    asset_network_requests: network.filter(isAsset).length,
    detail: all.map((r) => ({
      path: new URL(r.url).pathname,
      type: r.type,
      status: r.status,
      encoding: r.encoding ?? null,
      bytes: r.bytes,
      cache: r.fromCache,
    })),
  };
}

async function main() {
  const server = await startServer();
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: chromiumArgs });
  try {
    // An owner, an organization with a few projects, and some usage.
    const setup = await browser.newContext();
    const page = await setup.newPage();
    await page.goto(server.url + '/setup');
    const post = async (name, form) => {
      const res = await page.request.post(`${server.url}/api/console/${name}`, { form });
      if (res.status() !== 200) throw new Error(`${name}: ${res.status()} ${await res.text()}`);
      return res.json();
    };
    const { org_id: org } = await post('setup', {
      email: 'ada@example.com', name: 'Ada Owner', password: 'correct horse battery', org_name: 'Acme AI',
    });
    for (const name of ['Production', 'Staging', 'Research']) await post('create_project', { org_id: org, name });
    const storageState = await setup.storageState();
    await setup.close();

    const pages = {
      projects: `${server.url}/orgs/${org}/projects`,
      usage: `${server.url}/orgs/${org}/usage`,
    };
    const results = {};
    for (const [name, url] of Object.entries(pages)) {
      const cold = [];
      const warm = [];
      for (let i = 0; i < runs; i++) {
        const ctx = await browser.newContext({ storageState });
        await ctx.addInitScript(HYDRATION_MARK);
        cold.push(await load(ctx, await ctx.newPage(), url));
        warm.push(await load(ctx, await ctx.newPage(), url));
        await ctx.close();
      }
      const summary = (xs) => ({
        usable_ms: median(xs.map((x) => x.usable_ms)),
        usable_ms_runs: xs.map((x) => x.usable_ms),
        charts_ms: xs[0].charts_ms === null ? null : median(xs.map((x) => x.charts_ms)),
        load_ms: median(xs.map((x) => x.load_ms)),
        bytes: median(xs.map((x) => x.bytes)),
        requests: median(xs.map((x) => x.requests)),
        asset_network_requests: Math.max(...xs.map((x) => x.asset_network_requests)),
      });
      results[name] = { cold: summary(cold), warm: summary(warm), cold_detail: cold[0].detail, warm_detail: warm[0].detail };
    }

    if (asJson) {
      process.stdout.write(JSON.stringify({ link: LINK, runs, results }, null, 2) + '\n');
      return;
    }
    const kb = (n) => `${(n / 1000).toFixed(1)} kB`;
    const lines = [`Console weight: 10 Mbit/s, 40 ms latency, headless Chromium, median of ${runs} runs`];
    for (const [name, r] of Object.entries(results)) {
      for (const kind of ['cold', 'warm']) {
        const s = r[kind];
        const charts = s.charts_ms === null ? '' : `, charts drawn ${s.charts_ms} ms`;
        lines.push(`${name.padEnd(9)} ${kind}: usable ${s.usable_ms} ms (runs ${s.usable_ms_runs.join(', ')})${charts}, load event ${s.load_ms} ms, ` +
          `${kb(s.bytes)} transferred in ${s.requests} requests, ${s.asset_network_requests} asset requests to the network`);
      }
      lines.push(`  cold load of ${name}, request by request:`);
      for (const d of r.cold_detail) {
        lines.push(`    ${String(d.status).padEnd(4)} ${d.path.padEnd(48)} ${String(d.encoding ?? '-').padEnd(5)} ${kb(d.bytes)}`);
      }
      lines.push(`  warm load of ${name}, request by request:`);
      for (const d of r.warm_detail) {
        lines.push(`    ${String(d.status).padEnd(4)} ${d.path.padEnd(48)} ${d.cache ? 'cache' : 'network'} ${kb(d.bytes)}`);
      }
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await browser.close();
    server.stop();
  }
}

await main();
