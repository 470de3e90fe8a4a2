#!/usr/bin/env node
'use strict';
// Writes the files made from the command line's option table (src/cli/commands/,
// through src/cli/reference/): the bash completion contrib/bash-completion/nfqlb,
// the man page docs/nfqlb.1 and the options reference docs/options.md, so none of
// them can drift from what the CLI parses (test/unit/cli/reference.test.ts checks
// the files are what this writes). Reads the compiled CLI: run `npm run build:ts` first.
//   node scripts/gen-cli-reference.js          write them
//   node scripts/gen-cli-reference.js --check  exit 1 if one is stale
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/**
 * [file, text] for every generated file, from the compiled modules under dist/cli (`load('reference/table')`);
 * the test hands in a loader of the sources.
 */
function render(load = (m) => require(path.join(root, 'dist', 'cli', m))) {
  const PACKAGE_VERSION = require(path.join(root, 'package.json')).version;
  const commands = load('reference/table').referenceCommands(load('commands').allCommands());
  return [
    [path.join(root, 'contrib', 'bash-completion', 'nfqlb'), load('reference/bash').bashCompletion(commands, PACKAGE_VERSION)],
    [path.join(root, 'docs', 'nfqlb.1'), load('reference/man').manPage(commands, PACKAGE_VERSION)],
    [path.join(root, 'docs', 'options.md'), load('reference/markdown').optionsReference(commands, PACKAGE_VERSION)],
  ];
}

module.exports = { render };

if (require.main === module) {
  let stale = 0;
  for (const [file, text] of render()) {
    if (process.argv.includes('--check')) {
      const now = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
      if (now !== text) {
        process.stderr.write(`${path.relative(root, file)} is stale: run node scripts/gen-cli-reference.js\n`);
        stale++;
      }
    } else {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, text);
    }
  }
  process.exit(stale === 0 ? 0 : 1);
}
