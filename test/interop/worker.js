#!/usr/bin/env node
'use strict';
/**
 * Runs many nfqlb command lines in one process, for the differential test
 * (difftest.ts): spawning bin/nfqlb costs ~100 ms per command on a small
 * machine, so this project's CLI is called in-process through the same
 * entry point bin/nfqlb uses (dist/cli/main.js, with bin/nfqlb's handling of
 * an internal error), and the original is spawned (a C binary starts in ~2 ms).
 * Plain JavaScript so it runs under node inside a network namespace
 * (`ip netns exec NS node worker.js IMPL`) without a compile step.
 *
 * Usage: worker.js ours|original [ORIGINAL_PATH]
 * stdin: one JSON request per line {"argv": [...], "env": {...}}
 * stdout: one JSON reply per line {"rc": N, "stdout": base64, "stderr": base64}
 */
const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { spawnSync } = require('node:child_process');

const impl = process.argv[2];
const original = process.argv[3];
const { main } = impl === 'ours' ? require(path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js')) : { main: null };
// The CLI writes to descriptors 1 and 2 itself (src/cli/output.ts); here descriptor 1 carries the replies.
const { captureOutput } = impl === 'ours' ? require(path.join(__dirname, '..', '..', 'dist', 'cli', 'output.js')) : { captureOutput: null };

function reply(r) {
  fs.writeSync(1, `${JSON.stringify({ rc: r.rc, stdout: r.stdout.toString('base64'), stderr: r.stderr.toString('base64') })}\n`);
}

function toBuffer(chunk, encoding) {
  return Buffer.isBuffer(chunk) || chunk instanceof Uint8Array ? Buffer.from(chunk) : Buffer.from(String(chunk), typeof encoding === 'string' ? encoding : 'utf8');
}

/** Sets env for one command (undefined deletes), returns a function that puts it back. */
function withEnv(env) {
  const saved = {};
  for (const [k, v] of Object.entries(env || {})) {
    saved[k] = process.env[k];
    if (v === null || v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

async function runOurs(argv, env) {
  const out = [];
  const err = [];
  const realOut = process.stdout.write;
  const realErr = process.stderr.write;
  process.stdout.write = (chunk, encoding, cb) => {
    out.push(toBuffer(chunk, encoding));
    if (typeof encoding === 'function') encoding();
    else if (typeof cb === 'function') cb();
    return true;
  };
  process.stderr.write = (chunk, encoding, cb) => {
    err.push(toBuffer(chunk, encoding));
    if (typeof encoding === 'function') encoding();
    else if (typeof cb === 'function') cb();
    return true;
  };
  captureOutput((fd, chunk) => (fd === 1 ? out : err).push(toBuffer(chunk)));
  const restoreEnv = withEnv(env);
  let rc;
  try {
    rc = await main(argv);
  } catch (e) {
    // What bin/nfqlb does with a rejection.
    err.push(Buffer.from(`nfqlb: internal error: ${e && e.stack ? e.stack : e}\n`));
    rc = 70;
  } finally {
    captureOutput(null);
    process.stdout.write = realOut;
    process.stderr.write = realErr;
    restoreEnv();
    process.exitCode = undefined;
  }
  return { rc, stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
}

function runOriginal(argv, env) {
  const r = spawnSync(original, argv, { argv0: 'nfqlb', env: { ...process.env, ...(env || {}) }, timeout: 20000, maxBuffer: 64 << 20 });
  const rc = r.status !== null ? r.status : r.signal ? 128 + (require('node:os').constants.signals[r.signal] || 0) : -1;
  return { rc, stdout: r.stdout || Buffer.alloc(0), stderr: Buffer.concat([r.stderr || Buffer.alloc(0), Buffer.from(r.error ? String(r.error) : '')]) };
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  if (line === '') return;
  queue = queue.then(async () => {
    const req = JSON.parse(line);
    reply(impl === 'ours' ? await runOurs(req.argv, req.env) : runOriginal(req.argv, req.env));
  });
});
lines.on('close', () => {
  queue.then(() => process.exit(0));
});
