#!/usr/bin/env node
/**
 * npm run fuzz [-- --cases=N --seed=S --targets=packet,pcap --out=FILE]
 *
 * Runs test/fuzz/fuzzer.ts against the TypeScript sources (transpiled on
 * load, no build needed) and prints throughput and findings. Exit 1 when
 * anything was found; each finding names its case number, which with the
 * seed reproduces it (`--seed=S --cases=N+1` ends on it).
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

// A transpile-only require hook for .ts: the fuzzer and src/ as they are now.
require.extensions['.ts'] = (module, filename) => {
  const source = fs.readFileSync(filename, 'utf8');
  const out = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, sourceMap: false },
    fileName: filename,
  });
  module._compile(out.outputText, filename);
};

function option(name, dflt) {
  const arg = process.argv.slice(2).find((a) => a.startsWith(`--${name}=`));
  return arg === undefined ? dflt : arg.slice(name.length + 3);
}

const cases = Number(option('cases', '1000000'));
const seed = Number(option('seed', String(Date.now() % 1000000)));
const targetsOpt = option('targets', '');
const outFile = option('out', '');
if (!(Number.isInteger(cases) && cases > 0) || !Number.isInteger(seed)) {
  process.stderr.write('usage: npm run fuzz [-- --cases=N --seed=S --targets=packet,flow-args,control,config,pcap --out=FILE]\n');
  process.exit(2);
}

const { runFuzz, TARGETS } = require(path.join(__dirname, '..', 'test', 'fuzz', 'fuzzer.ts'));
const targets = targetsOpt === '' ? undefined : targetsOpt.split(',');
if (targets !== undefined && targets.some((t) => !TARGETS.includes(t))) {
  process.stderr.write(`unknown target in --targets=${targetsOpt} (known: ${TARGETS.join(', ')})\n`);
  process.exit(2);
}

process.stdout.write(`fuzz: ${cases} cases, seed ${seed}${targets ? `, targets ${targets.join(',')}` : ''}\n`);
const report = runFuzz({
  cases,
  seed,
  targets,
  progressEvery: Math.max(1000, Math.min(100000, Math.floor(cases / 10))),
  progress: (done, r) => process.stdout.write(`  ${done} cases, ${Math.round(done / (r.ms / 1000))} cases/s, ${r.findings.length} findings\n`),
});
const secs = report.ms / 1000;
process.stdout.write(
  `fuzz: ${report.cases} cases in ${secs.toFixed(1)} s (${Math.round(report.cases / secs)} cases/s); ` +
    `per target ${Object.entries(report.perTarget).map(([k, v]) => `${k}=${v}`).join(' ')}; findings ${report.findings.length}\n`,
);
for (const f of report.findings) {
  process.stdout.write(`\nFINDING ${f.target} case ${f.case} (seed ${report.seed}): ${f.problem}\n  input: ${f.input.slice(0, 600)}\n`);
}
if (outFile !== '') fs.writeFileSync(outFile, JSON.stringify(report, null, 1));
process.exitCode = report.findings.length === 0 ? 0 : 1;
