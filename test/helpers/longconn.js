#!/usr/bin/env node
/**
 * Long-lived TCP connections through the load balancer, for the --conntrack
 * test (test/e2e/conntrack.test.ts). Plain JavaScript: it runs inside the
 * namespaces as a child process, without a build.
 *
 *   longconn.js server NAME PORT
 *     accepts connections, writes `NAME\n` once, then echoes what it reads.
 *   longconn.js client DST PORT SRC FIRST_SPORT COUNT
 *     opens COUNT connections (source ports FIRST_SPORT...), reads each
 *     one's target name, prints `ready {sport: target}` as one JSON line,
 *     then writes one byte on every connection every 100 ms and expects it
 *     back. A connection is broken when it errs, closes, or has not echoed
 *     for 2 s. On a `report` line on stdin it prints
 *     `report {"alive": n, "broken": {sport: reason}}`; on `end` it closes
 *     everything and exits.
 */
'use strict';
const net = require('node:net');
const readline = require('node:readline');

const [mode, ...args] = process.argv.slice(2);

if (mode === 'server') {
  const [name, port] = args;
  const server = net.createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.write(`${name}\n`);
    sock.on('data', (d) => sock.write(d));
  });
  server.listen({ host: '::', port: Number(port), ipv6Only: false, backlog: 4096 }, () => process.stdout.write(`listening ${name} ${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
} else if (mode === 'client') {
  const [dst, port, src, firstSport, count] = args;
  const n = Number(count);
  const conns = [];
  const broken = {};
  const targets = {};
  let ready = 0;
  const breakIt = (c, why) => {
    if (c.broken) return;
    c.broken = true;
    broken[c.sport] = why;
    c.sock.destroy();
  };
  const opened = () => {
    ready++;
    if (ready === n) {
      process.stdout.write(`ready ${JSON.stringify(targets)}\n`);
      setInterval(tick, 100);
    }
  };
  const tick = () => {
    const now = Date.now();
    for (const c of conns) {
      if (c.broken || c.name === null) continue;
      if (now - c.lastEcho > 2000) {
        breakIt(c, 'silent');
        continue;
      }
      c.sock.write('x');
    }
  };
  // Open in waves so a SYN flood does not overrun the queues.
  let next = 0;
  const openMore = () => {
    for (let k = 0; k < 50 && next < n; k++, next++) {
      const sport = Number(firstSport) + next;
      const c = { sport, sock: null, name: null, buf: '', lastEcho: Date.now(), broken: false };
      c.sock = net.connect({ host: dst, port: Number(port), localAddress: src, localPort: sport });
      c.sock.setNoDelay(true);
      c.sock.setEncoding('utf8');
      c.sock.on('data', (d) => {
        c.lastEcho = Date.now();
        if (c.name !== null) return;
        c.buf += d;
        const nl = c.buf.indexOf('\n');
        if (nl < 0) return;
        c.name = c.buf.slice(0, nl);
        targets[sport] = c.name;
        opened();
      });
      c.sock.on('error', (e) => {
        if (c.name === null) {
          targets[sport] = null;
          broken[sport] = `connect: ${e.code || e.message}`;
          c.broken = true;
          opened();
        } else breakIt(c, e.code || e.message);
      });
      c.sock.on('close', () => breakIt(c, 'closed'));
      conns.push(c);
    }
    if (next < n) setTimeout(openMore, 20);
  };
  openMore();
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'report') {
      const alive = conns.filter((c) => !c.broken).length;
      process.stdout.write(`report ${JSON.stringify({ alive, broken })}\n`);
    } else if (line === 'end') {
      for (const c of conns) {
        c.broken = true;
        c.sock.destroy();
      }
      process.exit(0);
    }
  });
} else {
  process.stderr.write('usage: longconn.js server NAME PORT | client DST PORT SRC FIRST_SPORT COUNT\n');
  process.exit(2);
}
