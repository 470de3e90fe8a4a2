#!/usr/bin/env node
'use strict';
/**
 * The latency probe of the comparison (issue 21 point 3): a thin flow of UDP
 * packets that cross the load balancer beside the load and carry their send
 * time, so that the bench can say what a daemon adds per packet (its delay
 * minus the kernel's own HMARK path in the same round) and no CPU gain is
 * paid in latency invisibly.
 *
 *   probe.js recv --port=P     in a target namespace: receives on P (IPv4
 *                              and IPv6), prints `ready`; on SIGUSR1 prints
 *                              one JSON line of the delays since the last
 *                              one ({ count, delaysUs: [...] }, µs)
 *                              and starts again; exits on SIGTERM.
 *   probe.js send --dst=VIP --port=P --rate=N --seconds=S [--sockets=16]
 *                              in the generator: N packets/s for S seconds
 *                              from `sockets` source ports in turn (so the
 *                              probe spreads over the queues and targets
 *                              like the load), then prints { sent }.
 *
 * Times are process.hrtime.bigint() (CLOCK_MONOTONIC, one clock for every
 * namespace of the machine), written as 8 bytes at the start of the payload.
 */
const dgram = require('node:dgram');

const args = Object.fromEntries(
  process.argv.slice(3).map((a) => {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`probe.js: bad argument ${a}`);
    return [m[1], m[2]];
  }),
);

function recv() {
  const port = Number(args.port);
  const MAX = 1 << 20;
  const delays = new Float64Array(MAX);
  let n = 0;
  const onMessage = (msg) => {
    if (msg.length < 8 || n >= MAX) return;
    delays[n++] = Number(process.hrtime.bigint() - msg.readBigInt64LE(0)) / 1000;
  };
  const s4 = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20 });
  const s6 = dgram.createSocket({ type: 'udp6', ipv6Only: true, recvBufferSize: 1 << 20 });
  s4.on('message', onMessage);
  s6.on('message', onMessage);
  let bound = 0;
  const ready = () => {
    if (++bound === 2) process.stdout.write('ready\n');
  };
  s4.bind(port, '0.0.0.0', ready);
  s6.bind(port, '::', ready);
  process.on('SIGUSR1', () => {
    const xs = Array.from(delays.subarray(0, n), (x) => Math.round(x * 10) / 10);
    process.stdout.write(`${JSON.stringify({ count: xs.length, delaysUs: xs })}\n`);
    n = 0;
  });
  process.on('SIGTERM', () => process.exit(0));
}

async function send() {
  const dst = args.dst;
  const port = Number(args.port);
  const rate = Number(args.rate);
  const seconds = Number(args.seconds);
  const count = Math.round(rate * seconds);
  const socks = [];
  for (let i = 0; i < Number(args.sockets ?? 16); i++) {
    const s = dgram.createSocket(dst.includes(':') ? 'udp6' : 'udp4');
    await new Promise((r) => s.bind(0, r));
    socks.push(s);
  }
  const buf = Buffer.alloc(16);
  const t0 = process.hrtime.bigint();
  let sent = 0;
  while (sent < count) {
    // Due now by the pace: send what is due, then sleep a millisecond.
    const due = Math.min(count, Math.floor((Number(process.hrtime.bigint() - t0) / 1e9) * rate) + 1);
    while (sent < due) {
      buf.writeBigInt64LE(process.hrtime.bigint(), 0);
      socks[sent % socks.length].send(buf, port, dst);
      sent++;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await new Promise((r) => setTimeout(r, 50));
  for (const s of socks) s.close();
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
}

if (process.argv[2] === 'recv') recv();
else if (process.argv[2] === 'send') send();
else {
  process.stderr.write('usage: probe.js recv --port=P | send --dst=VIP --port=P --rate=N --seconds=S\n');
  process.exit(2);
}
