/**
 * The debug commands (cli/commands/fwmark.ts): nfqlb's address syntax for
 * --src/--dst, the hash `fwmark` prints for a 5-tuple (the hashes of
 * reference/cli/fwmark-primebelow.txt, which nfqlb 1.2.0 printed; without
 * --shm only the hash is printed, so no table is needed), and `primebelow`.
 */
import * as fs from 'node:fs';
import { parseAddrPort } from '../../../../src/cli/commands/fwmark';
import { runInProcess } from '../../../helpers/cli';
import { referencePath } from '../../../helpers/reference';

/** The fixture's command lines and nfqlb's output, pairwise. */
function captured(): Array<{ words: string[]; out: string }> {
  const lines = fs.readFileSync(referencePath('cli', 'fwmark-primebelow.txt'), 'utf8').split('\n');
  const out: Array<{ words: string[]; out: string }> = [];
  for (let i = 0; i + 1 < lines.length; i += 2) if (lines[i] !== '') out.push({ words: lines[i].split(' '), out: `${lines[i + 1]}\n` });
  return out;
}

describe('parseAddrPort', () => {
  test('v4:port becomes ::ffff:v4; [v6]:port; an empty port is 0', () => {
    const v4 = parseAddrPort('192.0.2.1:80');
    expect(Buffer.from(v4.addr).toString('hex')).toBe('00000000000000000000ffffc0000201');
    expect(v4.port).toBe(80);
    const v6 = parseAddrPort('[2001:db8::7]:65535');
    expect(Buffer.from(v6.addr).toString('hex')).toBe('20010db8000000000000000000000007');
    expect(v6.port).toBe(65535);
    expect(parseAddrPort('192.0.2.1:').port).toBe(0);
  });

  test('nfqlb\'s errors', () => {
    expect(() => parseAddrPort('192.0.2.1')).toThrow('No port in [192.0.2.1]');
    expect(() => parseAddrPort('[2001:db8::1]80')).toThrow('Parse address failed [[2001:db8::1]80]');
    expect(() => parseAddrPort('192.0.2.1:65536')).toThrow('Parse address failed [192.0.2.1:65536]');
    expect(() => parseAddrPort('192.0.2.300:1')).toThrow('Parse address failed [192.0.2.300:1]');
    expect(() => parseAddrPort('[::1]:x')).toThrow('Parse address failed [[::1]:x]');
    expect(() => parseAddrPort(`[${'1:'.repeat(30)}]:1`)).toThrow(/^Address too long/);
  });
});

describe('fwmark and primebelow', () => {
  const cases = captured();

  test('the fixture has both commands', () => {
    expect(cases.filter((c) => c.words[0] === 'fwmark').length).toBeGreaterThanOrEqual(5);
    expect(cases.filter((c) => c.words[0] === 'primebelow').length).toBeGreaterThanOrEqual(5);
  });

  test('fwmark without --shm prints the hash nfqlb printed for the same tuple and hash mode', async () => {
    for (const c of cases.filter((x) => x.words[0] === 'fwmark')) {
      const hash = (JSON.parse(c.out) as { hash: number }).hash;
      const words = c.words.filter((w) => !w.startsWith('--shm='));
      expect({ words, ...(await runInProcess(words)) }).toEqual({ words, rc: 0, stdout: `{ "hash": ${hash} }\n`, stderr: '' });
    }
  });

  test('primebelow prints what nfqlb printed', async () => {
    for (const c of cases.filter((x) => x.words[0] === 'primebelow')) {
      expect({ words: c.words, ...(await runInProcess(c.words)) }).toEqual({ words: c.words, rc: 0, stdout: c.out, stderr: '' });
    }
    expect(await runInProcess(['primebelow'])).toEqual({ rc: 0, stdout: '', stderr: '' });
  });

  test('errors: an unknown protocol, a bad address, a table that does not exist', async () => {
    expect(await runInProcess(['fwmark', '--proto=icmp', '--src=192.0.2.1:1', '--dst=192.0.2.2:2'])).toEqual({ rc: 1, stdout: '', stderr: 'Failed to parse protocol [icmp]\n' });
    expect((await runInProcess(['fwmark', '--src=192.0.2.1', '--dst=192.0.2.2:2'])).stderr).toBe('No port in [192.0.2.1]\n');
    expect(await runInProcess(['fwmark', '--shm=nfqlbts-fwmark-none', '--src=192.0.2.1:1', '--dst=192.0.2.2:2'])).toEqual({ rc: 1, stdout: '', stderr: 'FAILED mapSharedData: nfqlbts-fwmark-none\n' });
  });

  test('the protocol in any case; without --proto the hash is of the addresses only (ports ignored)', async () => {
    const a = await runInProcess(['fwmark', '--proto=TCP', '--src=198.51.100.7:33000', '--dst=192.0.2.1:80']);
    const b = await runInProcess(['fwmark', '--proto=tcp', '--src=198.51.100.7:33000', '--dst=192.0.2.1:80']);
    expect(a).toEqual(b);
    const p1 = await runInProcess(['fwmark', '--src=198.51.100.7:1', '--dst=192.0.2.1:2']);
    const p2 = await runInProcess(['fwmark', '--src=198.51.100.7:3', '--dst=192.0.2.1:4']);
    expect(p1).toEqual(p2);
    expect(p1.stdout).not.toBe(a.stdout);
  });
});
