/**
 * The user documentation points at what exists: every relative link in
 * README.md, CHANGELOG.md and docs/*.md names a file of the repository (and
 * an anchor, a heading of the file it names), every `docs/...` or
 * `deploy/...` path named in code spans exists, and nothing cites a file
 * outside the repository.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const DOCS = ['README.md', 'CHANGELOG.md', ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

function anchorsOf(file: string): Set<string> {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
  return new Set([...text.matchAll(/^#{1,6} (.*)$/gm)].map((m) => slug(m[1].replace(/`/g, ''))));
}

/** The text without fenced code blocks (shell lines there are not links). */
function prose(file: string): string {
  return fs.readFileSync(path.join(ROOT, file), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
}

describe.each(DOCS)('%s', (file) => {
  it('has relative links to files and headings that exist', () => {
    const broken: string[] = [];
    for (const m of prose(file).matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1];
      if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
      const [rel, anchor] = target.split('#');
      const linked = rel === '' ? file : path.posix.normalize(path.posix.join(path.posix.dirname(file), rel));
      if (!fs.existsSync(path.join(ROOT, linked))) broken.push(`${target} (no file ${linked})`);
      else if (anchor !== undefined && linked.endsWith('.md') && !anchorsOf(linked).has(anchor)) broken.push(`${target} (no heading #${anchor} in ${linked})`);
    }
    expect(broken).toEqual([]);
  });

  it('names only docs/, deploy/ and contrib/ files that exist', () => {
    const missing = [...prose(file).matchAll(/`((?:docs|deploy|contrib)\/[\w./-]+\.(?:md|ya?ml|json|png|1))`/g)]
      .map((m) => m[1])
      .filter((p) => !fs.existsSync(path.join(ROOT, p)));
    expect(missing).toEqual([]);
  });

  it('cites no file outside the repository', () => {
    expect(fs.readFileSync(path.join(ROOT, file), 'utf8').match(/SPEC\.md|\.\.\/shared\/[A-Z]+\.md/g)).toBeNull();
  });
});

it('the README stays a user\'s page: under 250 lines, starting with the two commands of a fresh machine', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  expect(readme.split('\n').length).toBeLessThan(250);
  expect(readme).toMatch(/^# nfqlb-ts\n\nOn a fresh Debian machine, as root, from a clone of this repository:\n\n```sh\nnpm run demo .*\nnpm test .*\n```\n/);
  // Both are what package.json runs through scripts/setup.sh.
  const scripts = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  expect([scripts.demo, scripts.test]).toEqual(['bash scripts/demo.sh', 'bash scripts/test.sh']);
  for (const script of ['scripts/demo.sh', 'scripts/test.sh']) expect(fs.readFileSync(path.join(ROOT, script), 'utf8')).toContain('bash scripts/setup.sh');
});
