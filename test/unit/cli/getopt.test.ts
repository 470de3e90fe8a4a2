/**
 * The option parser (getopt.ts) is glibc's getopt_long_only() as nfqlb calls
 * it. Fixed cases show the rules; then random command lines over random
 * option tables are parsed by the C library itself — getopt_long_only through
 * python3's ctypes, its messages read from stderr — and must come out the
 * same: the options found, the positional arguments after permutation, and
 * the message of the first error.
 */
import { execFileSync } from 'node:child_process';
import { getoptLongOnly, type GetoptResult, type LongOption } from '../../../src/cli/getopt';
import { prng } from '../../helpers/prng';

interface Case {
  prog: string;
  argv: string[];
  table: Array<[string, boolean]>;
  posix: boolean;
}

/** glibc's answers, one per case ('+' in optstring is POSIXLY_CORRECT's behaviour). */
const GLIBC = [
  "import ctypes, json, sys, os",
  "libc = ctypes.CDLL(None)",
  "class Option(ctypes.Structure):",
  "    _fields_ = [('name', ctypes.c_char_p), ('has_arg', ctypes.c_int), ('flag', ctypes.c_void_p), ('val', ctypes.c_int)]",
  "optind = ctypes.c_int.in_dll(libc, 'optind')",
  "optarg = ctypes.c_char_p.in_dll(libc, 'optarg')",
  "libc.getopt_long_only.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.c_char_p, ctypes.POINTER(Option), ctypes.POINTER(ctypes.c_int)]",
  "cases = json.load(sys.stdin)",
  "out = []",
  "for c in cases:",
  "    t = c['table']",
  "    table = (Option * (len(t) + 1))(*[Option(n.encode(), 1 if a else 0, None, 1000 + i) for i, (n, a) in enumerate(t)], Option(None, 0, None, 0))",
  "    words = [c['prog']] + c['argv']",
  "    argv = (ctypes.c_char_p * (len(words) + 1))(*[w.encode() for w in words], None)",
  "    optind.value = 0",
  "    r, w = os.pipe()",
  "    saved = os.dup(2)",
  "    os.dup2(w, 2)",
  "    found = []",
  "    error = False",
  "    try:",
  "        while True:",
  "            idx = ctypes.c_int(-1)",
  "            rc = libc.getopt_long_only(len(words), argv, b'+' if c['posix'] else b'', table, ctypes.byref(idx))",
  "            if rc == -1:",
  "                break",
  "            if rc == ord('?'):",
  "                error = True",
  "                break",
  "            k = rc - 1000",
  "            found.append({'index': k, 'value': optarg.value.decode()} if t[k][1] else {'index': k})",
  "    finally:",
  "        os.dup2(saved, 2)",
  "        os.close(saved)",
  "        os.close(w)",
  "    msg = os.read(r, 65536).decode()",
  "    os.close(r)",
  "    res = {'found': found}",
  "    if error:",
  "        res['error'] = msg.rstrip('\\n')",
  "    else:",
  "        res['positional'] = [argv[k].decode() for k in range(optind.value, len(words))]",
  "    out.append(res)",
  "print(json.dumps(out))",
].join('\n');

function glibc(cases: Case[]): GetoptResult[] {
  return JSON.parse(execFileSync('python3', ['-c', GLIBC], { input: JSON.stringify(cases), encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } })) as GetoptResult[];
}

const table = (t: Array<[string, boolean]>): LongOption[] => t.map(([name, hasArg]) => ({ name, hasArg }));
const SHM: Array<[string, boolean]> = [['shm', true], ['size', true], ['help', false], ['N', true]];

describe('getoptLongOnly', () => {
  test('--name=value, -name value, flags, prefixes, positional arguments moved behind, -- ends the options', () => {
    expect(getoptLongOnly('init', ['--sh=a', 'pos1', '-si', '3', '-he', '-', '--', '--shm=x'], table(SHM))).toEqual({
      found: [{ index: 0, value: 'a' }, { index: 1, value: '3' }, { index: 2 }],
      positional: ['pos1', '-', '--shm=x'],
    });
  });

  test('an exact name wins over the longer ones it is a prefix of; two candidates are ambiguous', () => {
    const t = table([['t', true], ['trace', false], ['target', true]]);
    expect(getoptLongOnly('x', ['-t', 'v'], t).found).toEqual([{ index: 0, value: 'v' }]);
    expect(getoptLongOnly('x', ['--tr'], t).found).toEqual([{ index: 1 }]);
    expect(getoptLongOnly('x', ['--ta=1', '--t=2'], t).found).toEqual([{ index: 2, value: '1' }, { index: 0, value: '2' }]);
    const amb = table([['trace', false], ['target', true]]);
    expect(getoptLongOnly('x', ['-t'], amb).error).toBe("x: option '-t' is ambiguous; possibilities: '-trace' '-target'");
  });

  test('the errors, in glibc\'s words, stop the parse with what came before', () => {
    const t = table(SHM);
    expect(getoptLongOnly('init', ['--help', '--bogus=1', '--shm=x'], t)).toEqual({ found: [{ index: 2 }], positional: [], error: "init: unrecognized option '--bogus=1'" });
    expect(getoptLongOnly('init', ['-help=1'], t).error).toBe("init: option '-help' doesn't allow an argument");
    expect(getoptLongOnly('init', ['--shm'], t).error).toBe("init: option '--shm' requires an argument");
    expect(getoptLongOnly('init', ['--=x'], t).error).toBe("init: option '--=x' is ambiguous; possibilities: '--shm' '--size' '--help' '--N'");
  });

  test('with POSIXLY_CORRECT the options end at the first positional argument', () => {
    expect(getoptLongOnly('init', ['--shm=a', 'p', '--size=3'], table(SHM), true)).toEqual({ found: [{ index: 0, value: 'a' }], positional: ['p', '--size=3'] });
  });

  test('extensions are matched by a prefix only when none of nfqlb\'s options matches', () => {
    const t: LongOption[] = [{ name: 'queue', hasArg: true }, { name: 'qlength', hasArg: true, extension: true }, { name: 'workers', hasArg: true, extension: true }];
    expect(getoptLongOnly('lb', ['--q=1'], t).found).toEqual([{ index: 0, value: '1' }]);
    expect(getoptLongOnly('lb', ['--ql=5', '--w=2'], t).found).toEqual([{ index: 1, value: '5' }, { index: 2, value: '2' }]);
  });

  test('random command lines: as the C library parses them', () => {
    const rnd = prng(23);
    const names = ['shm', 'size', 's', 'sh', 'target', 'trace', 'name', 'n', 'help', 'h', 'queue', 'q', 'M', 'N', 'x'];
    const words = ['--', '-', 'pos', 'v', '=', '--=', '-=', '---shm', '--shm=', '-s=1'];
    const cases: Case[] = [];
    for (let i = 0; i < 2000; i++) {
      const tableNames = names.filter(() => rnd() < 0.4);
      if (tableNames.length === 0) tableNames.push('shm');
      const t: Array<[string, boolean]> = tableNames.map((n) => [n, rnd() < 0.6]);
      const argv = Array.from({ length: Math.floor(rnd() * 6) }, () => {
        const r = rnd();
        if (r < 0.3) return words[Math.floor(rnd() * words.length)];
        const n = names[Math.floor(rnd() * names.length)];
        const cut = n.slice(0, 1 + Math.floor(rnd() * n.length));
        const dash = rnd() < 0.5 ? '--' : '-';
        return rnd() < 0.4 ? `${dash}${cut}=${Math.floor(rnd() * 10)}` : `${dash}${cut}`;
      });
      cases.push({ prog: rnd() < 0.5 ? 'init' : 'flow-set', argv, table: t, posix: rnd() < 0.2 });
    }
    const want = glibc(cases);
    const got = cases.map((c) => {
      const r = getoptLongOnly(c.prog, c.argv, table(c.table), c.posix);
      // glibc's argv after an error is half permuted; nfqlb stops there, so only the options and the message count.
      return r.error === undefined ? { found: r.found, positional: r.positional } : { found: r.found, error: r.error };
    });
    const diffs = cases.map((c, i) => ({ c, got: got[i], want: want[i] })).filter((d) => JSON.stringify(d.got) !== JSON.stringify(d.want));
    expect(diffs.slice(0, 5)).toEqual([]);
    // The cases reach every outcome.
    for (const kind of ['ambiguous', 'unrecognized', "doesn't allow", 'requires an argument']) {
      expect(want.filter((w) => w.error?.includes(kind) === true).length).toBeGreaterThan(20);
    }
    expect(want.filter((w) => w.error === undefined && w.positional.length > 0).length).toBeGreaterThan(100);
  });
});
