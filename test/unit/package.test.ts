/**
 * What ships is what runs in production: the npm package (package.json
 * `files`) and the container image hold bin/, dist/ and the addon's sources,
 * never the test bed, the tests, the bench or the scripts.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const NOT_PRODUCT = /^(testbed|test|bench|scripts|src|docs)\/|(^|\/)[^/]*(testbed|\.test\.|bench)[^/]*$/;

function listDist(dir = path.join(ROOT, 'dist')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? listDist(full) : [path.relative(ROOT, full).split(path.sep).join('/')];
  });
}

describe('the npm package', () => {
  // npm pack reads the tree as it is: dist/ must be built (scripts/setup.sh or `npx tsc -p .`).
  const packed: string[] = (
    JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' })) as Array<{
      files: Array<{ path: string }>;
    }>
  )[0].files.map((f) => f.path);

  it('holds the CLI, the compiled library and the addon sources it builds on install', () => {
    expect(packed).toEqual(expect.arrayContaining(['bin/nfqlb', 'dist/cli/main.js', 'dist/addon/native.js', 'binding.gyp', 'native/addon.cc', 'package.json', 'README.md']));
  });

  it('holds no test bed, test, bench, script or TypeScript source', () => {
    expect(packed.filter((f) => NOT_PRODUCT.test(f))).toEqual([]);
    expect(packed.filter((f) => !/^(bin|dist|native)\/|^(binding\.gyp|package\.json|README\.md|LICENSE)$/.test(f))).toEqual([]);
  });

  it('ships one dist/ file per module of src/ (no test-bed or stale output)', () => {
    const fromSrc = (f: string): string => path.join(ROOT, 'src', f.slice('dist/'.length).replace(/\.js$/, '.ts'));
    expect(packed.filter((f) => f.startsWith('dist/') && !fs.existsSync(fromSrc(f)))).toEqual([]);
  });
});

describe('dist/ and the container image', () => {
  it('dist/ holds no test-bed file', () => {
    expect(listDist().filter((f) => /testbed/i.test(f))).toEqual([]);
  });

  it('the Dockerfile copies only the product into the image', () => {
    const copies = fs
      .readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
      .split('\n')
      .filter((l) => /^COPY\s/.test(l))
      .flatMap((l) => l.replace(/^COPY\s+(--from=\S+\s+)?/, '').split(/\s+/).slice(0, -1));
    expect(copies.filter((c) => /testbed|test\/|bench|scripts/.test(c))).toEqual([]);
  });
});
