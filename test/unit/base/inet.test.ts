/**
 * inet_pton / inet_ntop for IPv6 (inet.ts) must be glibc's: which CIDR texts
 * are accepted and how listings and traces print addresses depend on it.
 * Besides the fixed cases, random addresses and texts are compared with the
 * C library itself, through python3's socket.inet_pton / inet_ntop (which
 * call it).
 */
import { execFileSync } from 'node:child_process';
import { inetNtop6, inetPton6 } from '../../../src/base/inet';
import { prng } from '../../helpers/prng';

function bytesOf(text: string): Uint8Array {
  const b = new Uint8Array(16);
  if (!inetPton6(text, b)) throw new Error(`inetPton6 refused ${text}`);
  return b;
}

/** The C library's answers: inet_ntop of each hex address, inet_pton (hex, or null when refused) of each text. */
function libc(addrs: string[], texts: string[]): { ntop: string[]; pton: Array<string | null> } {
  const script = [
    'import json, socket, sys',
    'q = json.load(sys.stdin)',
    'def pton(t):',
    '    try: return socket.inet_pton(socket.AF_INET6, t).hex()',
    '    except (OSError, ValueError): return None',
    'print(json.dumps({"ntop": [socket.inet_ntop(socket.AF_INET6, bytes.fromhex(a)) for a in q["addrs"]], "pton": [pton(t) for t in q["texts"]]}))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', script], { input: JSON.stringify({ addrs, texts }), encoding: 'utf8' })) as {
    ntop: string[];
    pton: Array<string | null>;
  };
}

describe('inet_pton / inet_ntop', () => {
  test('glibc formatting', () => {
    const ntop = (s: string): string => inetNtop6(bytesOf(s));
    expect(ntop('::')).toBe('::');
    expect(ntop('::1')).toBe('::1');
    expect(ntop('1::')).toBe('1::');
    expect(ntop('::ffff:0.0.0.0')).toBe('::ffff:0.0.0.0');
    expect(ntop('::1.2.3.4')).toBe('::1.2.3.4');
    expect(ntop('1:0:0:2:0:0:0:3')).toBe('1:0:0:2::3');
    expect(ntop('1:0:0:2:0:0:3:4')).toBe('1::2:0:0:3:4');
    expect(ntop('1:0:2:0:3:0:4:0')).toBe('1:0:2:0:3:0:4:0');
    expect(ntop('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
  });

  test('key bytes at an offset (trace lines print the key addresses)', () => {
    const key = new Uint8Array(40);
    key.set(bytesOf('::ffff:198.51.100.2'), 0);
    key.set(bytesOf('2001:db8::1'), 16);
    expect(inetNtop6(key, 0)).toBe('::ffff:198.51.100.2');
    expect(inetNtop6(key, 16)).toBe('2001:db8::1');
  });

  test('texts glibc refuses', () => {
    const out = new Uint8Array(16);
    for (const bad of ['', ':', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7::8', ':1::', '1:', '12345::', 'g::', '::1.2.3',
      '::1.2.3.04', '::256.1.1.1', '1.2.3.4', 'fe80::1%eth0', ' ::1', '::1 ', '1:2:3:4:5:6:7:1.2.3.4']) {
      expect([bad, inetPton6(bad, out)]).toEqual([bad, false]);
    }
  });

  test('random addresses print and random texts parse as the C library does', () => {
    const rnd = prng(20);
    const addrs: string[] = [];
    for (let i = 0; i < 1500; i++) {
      // Words mostly zero, so runs of zeros of every length and position occur; sometimes the IPv4 forms.
      const b = new Uint8Array(16);
      for (let w = 0; w < 8; w++) {
        const r = rnd();
        const v = r < 0.55 ? 0 : r < 0.65 ? 0xffff : Math.floor(rnd() * 0x10000);
        b[2 * w] = v >> 8;
        b[2 * w + 1] = v & 0xff;
      }
      if (rnd() < 0.1) b.fill(0, 0, 10);
      addrs.push(Buffer.from(b).toString('hex'));
    }
    // Texts: the printed forms of those addresses, full forms, and both mutated by one character.
    const full = (hex: string): string => (hex.match(/..../g) as string[]).join(':');
    const texts: string[] = [];
    const edits = [':', '::', '0', 'f', 'F', 'g', '.', '1.2.3.4', '00000', ''];
    for (let i = 0; i < 1500; i++) {
      const a = addrs[i];
      let t = rnd() < 0.7 ? inetNtop6(Uint8Array.from(Buffer.from(a, 'hex'))) : full(a);
      if (rnd() < 0.5) {
        const at = Math.floor(rnd() * (t.length + 1));
        const cut = rnd() < 0.5 ? 1 : 0;
        t = t.slice(0, at) + edits[Math.floor(rnd() * edits.length)] + t.slice(at + cut);
      }
      if (rnd() < 0.2) t = t.toUpperCase();
      texts.push(t);
    }
    const want = libc(addrs, texts);
    const ntop = addrs.map((a) => inetNtop6(Uint8Array.from(Buffer.from(a, 'hex'))));
    const pton = texts.map((t) => {
      const out = new Uint8Array(16);
      return inetPton6(t, out) ? Buffer.from(out).toString('hex') : null;
    });
    expect(ntop).toEqual(want.ntop);
    // The texts hit both sides of the rules.
    expect(pton.filter((p) => p !== null).length).toBeGreaterThan(500);
    expect(pton.filter((p) => p === null).length).toBeGreaterThan(100);
    expect(pton).toEqual(want.pton);
  });
});
