#!/usr/bin/env node
// Serves the example page (examples/web) with what SQLite WASM on OPFS needs:
// Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy (SharedArrayBuffer
// for the "opfs" VFS), .wasm as application/wasm, modules as text/javascript.
// Only node:http; no framework. Only these folders of the repository are served:
// examples/web (the page, its node_modules), bindings/web (the package) and sql
// (the host schema the page creates).
//
//   node examples/web/server.mjs [--port 8417]     prints the URL on its own line
//
// OPFS is per origin and the port is part of the origin: keep one port.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_PORT = 8417;
const SERVED = ['examples/web/', 'bindings/web/', 'sql/'];
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.sql': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
};

function send(res, status, body, type = 'text/plain; charset=utf-8') {
  res.writeHead(status, {
    'Content-Type': type,
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

function handle(req, res) {
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
  } catch {
    return send(res, 400, 'bad request\n');
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'GET only\n');
  if (pathname === '/' || pathname === '/examples/web') {
    res.writeHead(302, { Location: '/examples/web/' });
    return res.end();
  }
  let rel = path.posix.normalize(pathname).replace(/^\/+/, '');
  if (rel.endsWith('/') || rel === '') rel += 'index.html';
  if (rel.includes('..') || !SERVED.some((p) => rel.startsWith(p))) return send(res, 404, 'not found\n');
  const file = path.join(ROOT, rel);
  fs.readFile(file, (err, data) => {
    if (err) return send(res, 404, 'not found\n');
    send(res, 200, req.method === 'HEAD' ? undefined : data, TYPES[path.extname(file)] ?? 'application/octet-stream');
  });
}

/** Starts the server; resolves to { server, port, url } once it listens. port 0 picks a free one. */
export function startServer({ port = DEFAULT_PORT, host = '127.0.0.1' } = {}) {
  const server = http.createServer(handle);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const actual = server.address().port;
      resolve({ server, port: actual, url: `http://${host}:${actual}/examples/web/` });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const i = process.argv.indexOf('--port');
  const port = i > 0 ? Number(process.argv[i + 1]) : Number(process.env.WEB_DEMO_PORT || DEFAULT_PORT);
  startServer({ port })
    .then(({ url }) => {
      console.log('run_recovery example: a protocol runner on SQLite WASM in OPFS. Open in Chromium (Ctrl+C stops):');
      console.log(url);
      console.log(`Quick recovery to try: ${url}?threshold_ms=3000&step_ms=1000&steps=8 (start a run, close the tab mid-run, open the URL again after 3 s)`);
    })
    .catch((e) => {
      console.error(`web-demo: cannot listen on 127.0.0.1:${port}: ${e.message}${e.code === 'EADDRINUSE' ? ' (another web-demo running? WEB_DEMO_PORT=… picks another port, and another OPFS origin)' : ''}`);
      process.exit(1);
    });
}
