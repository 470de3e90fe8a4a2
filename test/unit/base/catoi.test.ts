/**
 * C's number parsing as glibc does it (catoi.ts): strtol for base 0 (match
 * statements, trace masks) and base 10, atoi (every option number), and
 * sscanf("%u") for ports and prefixes. Besides the fixed cases, random texts
 * are compared with the C library itself (through python3's ctypes).
 */
import { execFileSync } from 'node:child_process';
import { atoi, scanUnsigned, strtol } from '../../../src/base/catoi';
import { prng } from '../../helpers/prng';

describe('strtol, atoi, sscanf("%u")', () => {
  test('strtol base 0 (match statements, trace masks) and base 10 (atoi) share one parser', () => {
    expect(strtol('010', 0)).toBe(8n);
    expect(strtol(' 0x1F', 0)).toBe(31n);
    expect(strtol('0x', 0)).toBe(0n);
    expect(strtol('-0x10', 0)).toBe(-16n);
    expect(strtol('99999999999999999999', 0)).toBe((1n << 63n) - 1n);
    expect(strtol('010', 10)).toBe(10n);
    expect(strtol('-99999999999999999999', 10)).toBe(-(1n << 63n));
    expect(scanUnsigned(' +0080', 65535)).toBe(80);
    expect(scanUnsigned('99999999999', 65535)).toBe(65536);
    expect(scanUnsigned('-1', 65535)).toBe(-1);
  });

  test('atoi keeps the low 32 bits of strtol; no digits is 0', () => {
    expect(atoi('2147483648')).toBe(-2147483648);
    expect(atoi('4294967297')).toBe(1);
    expect(atoi('\n\t+7')).toBe(7);
    expect(atoi('- 7')).toBe(0);
    expect(atoi('0x10')).toBe(0);
  });

  test('scanUnsigned: leading zeros, the bound, trailing text', () => {
    expect(scanUnsigned('00000000000000080x', 65535)).toBe(80);
    expect(scanUnsigned('65535', 65535)).toBe(65535);
    expect(scanUnsigned('65536', 65535)).toBe(65536);
    expect(scanUnsigned('', 128)).toBe(-1);
    expect(scanUnsigned('+', 128)).toBe(-1);
  });

  test('random texts: strtol (bases 0 and 10) and atoi as the C library computes them', () => {
    const rnd = prng(7);
    const alphabet = [' ', '\t', '+', '-', '0', '0', '1', '7', '8', '9', 'x', 'X', 'a', 'F', 'g', '9999999999', '0x'];
    const texts = Array.from({ length: 3000 }, () => Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join(''));
    const script = [
      'import ctypes, json, sys',
      'libc = ctypes.CDLL(None)',
      'libc.strtol.restype = ctypes.c_long',
      'libc.strtol.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]',
      'libc.atoi.argtypes = [ctypes.c_char_p]',
      'ts = json.load(sys.stdin)',
      'print(json.dumps([[str(libc.strtol(t.encode(), None, 0)), str(libc.strtol(t.encode(), None, 10)), libc.atoi(t.encode())] for t in ts]))',
    ].join('\n');
    const want = JSON.parse(execFileSync('python3', ['-c', script], { input: JSON.stringify(texts), encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } })) as Array<[string, string, number]>;
    const got = texts.map((t) => [String(strtol(t, 0)), String(strtol(t, 10)), atoi(t)]);
    const diffs = texts.map((t, i) => ({ t, got: got[i], want: want[i] })).filter((d) => JSON.stringify(d.got) !== JSON.stringify(d.want));
    expect(diffs.slice(0, 10)).toEqual([]);
    // The texts reach the interesting cases: hex, octal, saturation.
    expect(want.some(([b0]) => b0 === '9223372036854775807')).toBe(true);
    expect(texts.some((t, i) => /0x[0-9a-fA-F]/.test(t) && want[i][0] !== want[i][1])).toBe(true);
  });
});
