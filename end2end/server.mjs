// Starts a Tollgate server for one test file: a fresh data dir (SQLite), a free
// port, the binary and site built by scripts/build (TOLLGATE_BIN, TOLLGATE_SITE_ROOT).
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

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

export async function startServer(extraEnv = {}) {
  const bin = process.env.TOLLGATE_BIN;
  if (!bin) throw new Error('TOLLGATE_BIN is not set: run the tests through scripts/test');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-e2e-'));
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(bin, [], {
    env: {
      ...process.env,
      TOLLGATE_LISTEN: `127.0.0.1:${port}`,
      TOLLGATE_DATA_DIR: join(dir, 'data'),
      TOLLGATE_PUBLIC_URL: url,
      RUST_LOG: 'info',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) return { url, proc, log: () => log, stop: () => proc.kill('SIGTERM') };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`server did not become ready:\n${log}`);
}

export const artifacts = join(process.cwd(), 'end2end', 'artifacts');
mkdirSync(artifacts, { recursive: true });

export const chromiumArgs = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
