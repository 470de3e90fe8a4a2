'use strict';
/**
 * A stand-in for Meridio's stateless-lb (test code, test/image/image.test.ts):
 * it drives nfqlb the way Meridio v1.2.8's pkg/loadbalancer/nfqlb does
 * (../shared/MERIDIO.md), so that the image is tested under the process model
 * it will live in.
 *
 * - It starts `nfqlb flowlb --promiscuous_ping --queue=0:3 --qlength=1024
 *   --hash_mode=0` as its child (found on PATH, as Go's exec.Command does),
 *   stdout and stderr captured into one buffer held for the child's life
 *   (CombinedOutput), and exits non-zero with that output when the child
 *   exits; SIGTERM kills the child with SIGKILL (a cancelled context) first.
 * - Every change is one `nfqlb` process, one after another, its combined
 *   output captured, a non-zero exit an error, with Meridio's command lines.
 * - `flow-list` is decoded as Go's encoding/json decodes it into
 *   `[]struct{ Name string; UserRef string `json:"user_ref"`; MatchesCount int `json:"matches_count"` }`.
 *
 * Meridio takes its changes from NSP over gRPC; this stand-in takes them over
 * HTTP on --control=ADDR:PORT (in the container's network namespace):
 *   POST /stream {stream, maxTargets}         nfqlb init
 *   POST /target {stream, index, fwmark}      nfqlb activate (the routes are the test bed's)
 *   DELETE /target {stream, index}            nfqlb deactivate
 *   POST /flow {stream, flow, prio, protocols, dsts, srcs, dports, sports, match}   nfqlb flow-set
 *   DELETE /flow {stream, flow}               nfqlb flow-delete
 *   DELETE /stream {stream, targets, flows}   deactivate each, flow-delete each, nfqlb delete
 *   GET /flows                                nfqlb flow-list, decoded: [{stream, flow, matchesCount}]
 *   GET /output                               the daemon's combined output so far
 * Each answers 200 with JSON, or 500 {error} carrying the command's output.
 */
const { spawn, execFile } = require('node:child_process');
const http = require('node:http');

const FLOWLB = ['flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0'];

/** Go's JSON number grammar for an int field: an integer literal within int64 (no fraction, no exponent). */
function goInt(source, field) {
  if (!/^-?(0|[1-9][0-9]*)$/.test(source)) {
    throw new Error(`json: cannot unmarshal number ${source} into Go struct field .${field} of type int`);
  }
  const v = BigInt(source);
  if (v > 9223372036854775807n || v < -9223372036854775808n) {
    throw new Error(`json: cannot unmarshal number ${source} into Go struct field .${field} of type int`);
  }
  return Number(v);
}

function goTypeError(value, field, type) {
  const kind = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return new Error(`json: cannot unmarshal ${kind} into Go struct field .${field} of type ${type}`);
}

/**
 * The number literals of valid JSON `text` that are object members:
 * [{key, literal, depth}] (depth 2: a member of an object in the top array).
 * JSON.parse keeps only the value; Go's decoder sees the literal.
 */
function memberNumbers(text) {
  const token = /\s+|"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|[{}[\]:,]|true|false|null/y;
  const out = [];
  let depth = 0;
  let key = null;
  let prev = null;
  for (let m = token.exec(text); m !== null; m = token.lastIndex < text.length ? token.exec(text) : null) {
    const t = m[0];
    if (/^\s/.test(t)) continue;
    if (t === '{' || t === '[') depth++;
    else if (t === '}' || t === ']') depth--;
    else if (t[0] === '"' && (prev === '{' || prev === ',')) key = JSON.parse(t);
    else if (/^-|^[0-9]/.test(t) && prev === ':') out.push({ key, literal: t, depth });
    prev = t[0] === '"' ? 'string' : t;
  }
  return out;
}

/**
 * `nfqlb flow-list`'s stdout decoded as Meridio decodes it with encoding/json:
 * the whole text one JSON value (whitespace around it only; a trailing NUL or
 * anything else is an error), an array (null: none) of objects (null: a zero
 * entry), keys matched to the fields case-insensitively (ASCII folding; the
 * last duplicate wins), other keys ignored, `matches_count` an integer
 * literal. Returns [{Name, UserRef, MatchesCount}].
 */
function decodeFlowList(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`decoding flow-list: ${err.message}`);
  }
  if (parsed === null) return [];
  if (!Array.isArray(parsed)) throw goTypeError(parsed, '', '[]nfqlb.flowInfo');
  // Go checks each literal it stores in an int field, duplicates included.
  const counts = memberNumbers(text).filter((m) => m.depth === 2 && m.key.toLowerCase() === 'matches_count');
  for (const m of counts) goInt(m.literal, m.key);
  const fields = { name: 'Name', user_ref: 'UserRef', matches_count: 'MatchesCount' };
  return parsed.map((entry) => {
    const out = { Name: '', UserRef: '', MatchesCount: 0 };
    if (entry === null) return out;
    if (typeof entry !== 'object' || Array.isArray(entry)) throw goTypeError(entry, '', 'nfqlb.flowInfo');
    for (const [key, value] of Object.entries(entry)) {
      const field = fields[key.toLowerCase()];
      if (field === undefined || value === null) continue;
      if (field === 'MatchesCount') {
        if (typeof value !== 'number') throw goTypeError(value, key, 'int');
        out.MatchesCount = value;
      } else {
        if (typeof value !== 'string') throw goTypeError(value, key, 'string');
        out[field] = value;
      }
    }
    return out;
  });
}

/** Meridio's reading of a decoded entry: the flow is Name[len(user_ref)+1:], the stream user_ref[5:]. */
function meridioFlow(info) {
  return { stream: info.UserRef.slice(5), flow: info.Name.slice(info.UserRef.length + 1), matchesCount: info.MatchesCount };
}

/** Meridio's `nfqlb flow-set` arguments for a flow of a stream. */
function flowSetArgs(f) {
  const args = ['flow-set', `--name=tshm-${f.stream}-${f.flow}`, `--target=tshm-${f.stream}`, `--prio=${f.prio}`,
    `--protocols=${(f.protocols ?? []).join(',')}`];
  if ((f.dsts ?? []).length > 0) args.push(`--dsts=${f.dsts.join(',')}`);
  const srcs = f.srcs ?? [];
  if (!srcs.every((s) => s.endsWith('/0'))) args.push(`--srcs=${srcs.join(',')}`);
  const ranges = (name, rs) => {
    if (rs !== undefined && !rs.some((r) => r === '0-65535')) args.push(`--${name}=${rs.join(',')}`);
  };
  ranges('dports', f.dports);
  ranges('sports', f.sports);
  if ((f.match ?? []).length > 0) args.push(`--match=${f.match.join(',')}`);
  return args;
}

/**
 * One `nfqlb` process: resolves with its stdout and its combined output (in
 * arrival order, as CombinedOutput), rejects on a non-zero exit.
 */
function run(args) {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let output = '';
    const child = execFile('nfqlb', args, { encoding: 'utf8' }, (err) => {
      if (err) reject(new Error(`nfqlb ${args.join(' ')}: ${err.code ?? err.signal}: ${output}`));
      else resolve({ stdout, output });
    });
    child.stdout.on('data', (d) => { stdout += d; output += d; });
    child.stderr.on('data', (d) => { output += d; });
  });
}

/** A change: the combined output, as Meridio captures it. */
const nfqlb = async (args) => (await run(args)).output;

/** `nfqlb flow-list`: stdout only, as Meridio reads it. */
const flowList = async () => (await run(['flow-list'])).stdout;

const routes = {
  'POST /stream': (b) => nfqlb(['init', '--ownfw=0', `--shm=tshm-${b.stream}`, `--M=${100 * b.maxTargets}`, `--N=${b.maxTargets}`]),
  'POST /target': (b) => nfqlb(['activate', `--index=${b.index}`, `--shm=tshm-${b.stream}`, `${b.fwmark}`]),
  'DELETE /target': (b) => nfqlb(['deactivate', `--index=${b.index}`, `--shm=tshm-${b.stream}`]),
  'POST /flow': (b) => nfqlb(flowSetArgs(b)),
  'DELETE /flow': (b) => nfqlb(['flow-delete', `--name=tshm-${b.stream}-${b.flow}`]),
  'DELETE /stream': async (b) => {
    let out = '';
    for (const index of b.targets ?? []) out += await nfqlb(['deactivate', `--index=${index}`, `--shm=tshm-${b.stream}`]);
    for (const flow of b.flows ?? []) out += await nfqlb(['flow-delete', `--name=tshm-${b.stream}-${flow}`]);
    return out + (await nfqlb(['delete', `--shm=tshm-${b.stream}`]));
  },
  'GET /flows': async () => decodeFlowList(await flowList()).map(meridioFlow),
};

function main(argv) {
  const control = /^--control=(.+):(\d+)$/.exec(argv.find((a) => a.startsWith('--control=')) ?? '');
  if (control === null) {
    process.stderr.write('usage: standin-lb.js --control=ADDR:PORT\n');
    process.exit(2);
  }
  let output = '';
  const daemon = spawn('nfqlb', FLOWLB, { stdio: ['ignore', 'pipe', 'pipe'] });
  daemon.stdout.on('data', (d) => { output += d; });
  daemon.stderr.on('data', (d) => { output += d; });
  daemon.on('error', (err) => {
    process.stderr.write(`stateless-lb: starting nfqlb: ${err.message}\n`);
    process.exit(1);
  });
  daemon.on('exit', (code, signal) => {
    // Meridio: the error of CombinedOutput() with the output, then the context is cancelled and it ends.
    const status = signal !== null ? `signal: ${signal === 'SIGKILL' ? 'killed' : signal}` : `exit status ${code}`;
    process.stderr.write(`stateless-lb: nfqlb flowlb ended: ${status}: ${output}\n`);
    process.exit(1);
  });
  process.on('SIGTERM', () => daemon.kill('SIGKILL'));

  // One change at a time, in arrival order.
  let queue = Promise.resolve();
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const send = (status, value) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(value));
      };
      if (req.method === 'GET' && req.url === '/output') return send(200, { output });
      const route = routes[`${req.method} ${req.url}`];
      if (route === undefined) return send(404, { error: `no route ${req.method} ${req.url}` });
      queue = queue.then(async () => {
        try {
          send(200, { result: await route(body === '' ? {} : JSON.parse(body)) });
        } catch (err) {
          send(500, { error: err.message });
        }
      });
    });
  });
  server.listen(Number(control[2]), control[1], () => {
    process.stdout.write(`stateless-lb stand-in: control on ${control[1]}:${control[2]}, daemon pid ${daemon.pid}\n`);
  });
}

module.exports = { decodeFlowList, meridioFlow, flowSetArgs };
if (require.main === module) main(process.argv.slice(2));
