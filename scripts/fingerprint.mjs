// Gives the console's static assets content-hashed names and compresses them,
// at build time (scripts/build runs it): the server then serves each hashed
// file with a year of immutable caching, and its .br or .gz twin by
// Accept-Encoding (tower-http's ServeDir, precompressed).
//
// Usage: node scripts/fingerprint.mjs SITE_DIR [--fast]
//   --fast: quicker, weaker compression (debug builds: a 30 MB wasm at brotli 11 takes a minute)
//
// Writes SITE_DIR/hash.txt in Leptos's format (`key: hash` a line), which the
// server hands to Leptos (`LeptosOptions::hash_files`): `js`, `wasm` and `css`
// name pkg/tollgate.<hash>.{js,wasm,css} (HydrationScripts, HashedStylesheet);
// `echarts` and `favicon` are read by the shell. Node's own zlib and crypto:
// nothing to install.
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync, copyFileSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join, dirname, basename, extname } from 'node:path';
import { brotliCompressSync, gzipSync, constants as z } from 'node:zlib';

const [site, flag] = process.argv.slice(2);
if (!site) {
  console.error('usage: node scripts/fingerprint.mjs SITE_DIR [--fast]');
  process.exit(2);
}
const fast = flag === '--fast';

// key in hash.txt -> file (relative to the site), and whether its unhashed
// name stays served too (a page outside Leptos links /pkg/tollgate.css; the
// favicon's plain name is what browsers ask for by themselves).
const assets = [
  { key: 'js', file: 'pkg/tollgate.js', keep: false },
  { key: 'wasm', file: 'pkg/tollgate.wasm', keep: false },
  { key: 'css', file: 'pkg/tollgate.css', keep: true },
  { key: 'echarts', file: 'pkg/echarts.js', keep: false },
  { key: 'favicon', file: 'pkg/favicon.svg', keep: false },
];

/** 16 hex digits (64 bits) of the content's SHA-256. */
const hashOf = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

const lines = [];
for (const { key, file, keep } of assets) {
  const path = join(site, file);
  const hash = hashOf(readFileSync(path));
  const ext = extname(file);
  const hashed = join(dirname(path), `${basename(file, ext)}.${hash}${ext}`);
  if (keep) copyFileSync(path, hashed);
  else renameSync(path, hashed);
  lines.push(`${key}: ${hash}`);
}
writeFileSync(join(site, 'hash.txt'), lines.join('\n') + '\n');

// Every text-like file of the site gets a .br and a .gz next to it, when that
// is smaller; ServeDir picks by the request's Accept-Encoding.
const compressible = new Set(['.js', '.mjs', '.wasm', '.css', '.svg', '.json', '.html', '.txt', '.map']);
const walk = (dir) => readdirSync(dir).flatMap((name) => {
  const p = join(dir, name);
  return statSync(p).isDirectory() ? walk(p) : [p];
});
for (const p of walk(site)) {
  if (!compressible.has(extname(p))) continue;
  const raw = readFileSync(p);
  const br = brotliCompressSync(raw, {
    params: {
      [z.BROTLI_PARAM_QUALITY]: fast ? 5 : z.BROTLI_MAX_QUALITY,
      [z.BROTLI_PARAM_LGWIN]: z.BROTLI_MAX_WINDOW_BITS,
      [z.BROTLI_PARAM_MODE]: extname(p) === '.wasm' ? z.BROTLI_MODE_GENERIC : z.BROTLI_MODE_TEXT,
      [z.BROTLI_PARAM_SIZE_HINT]: raw.length,
    },
  });
  const gz = gzipSync(raw, { level: fast ? 6 : z.Z_BEST_COMPRESSION });
  for (const [suffix, bytes] of [['.br', br], ['.gz', gz]]) {
    if (bytes.length < raw.length) writeFileSync(p + suffix, bytes);
    else try { unlinkSync(p + suffix); } catch { /* none */ }
  }
}
