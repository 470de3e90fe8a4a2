/**
 * The shape of a command (command.ts): the default an option's help states,
 * the order and filtering of `-h`'s option lines, the own-process switch the
 * blocking client depends on, stdout through output.ts, and the default
 * context (the table store loaded on first use only).
 */
import {
  defaultContext, defaultText, EXTENSION, helpOptions, isOwnProcess, out, setOwnProcess,
  type NfqlbCommand, type Options,
} from '../../../src/cli/command';
import { captureOutput } from '../../../src/cli/output';
import type { CommandParser } from '../../../src/replay/config';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { ROOT } from '../../helpers/cli';

describe('defaultText', () => {
  it('is the description in words when there is one, else the default value, else undefined', () => {
    expect(defaultText({ type: 'string', default: '1024', defaultDescription: 'qlength*mtu/2' })).toBe('qlength*mtu/2');
    expect(defaultText({ type: 'string', default: '1024' })).toBe('1024');
    expect(defaultText({ type: 'string', default: '' })).toBe('');
    expect(defaultText({ type: 'boolean' })).toBeUndefined();
  });
});

describe('helpOptions', () => {
  const opt = (extra: Partial<Options> = {}): Options => ({ type: 'string', ...extra });

  it("lists nfqlb's options in declaration order, then the extensions in theirs, hidden ones left out", () => {
    const cmd = {
      options: {
        ext1: opt({ group: EXTENSION }),
        queue: opt(),
        secret: opt({ hidden: true }),
        ext2: opt({ group: EXTENSION }),
        mtu: opt(),
        hiddenExt: opt({ group: EXTENSION, hidden: true }),
        other: opt({ group: 'another group' }),
      },
    };
    expect(helpOptions(cmd).map(([name]) => name)).toEqual(['queue', 'mtu', 'other', 'ext1', 'ext2']);
    expect(helpOptions(cmd)[0][1]).toBe(cmd.options.queue);
  });

  it('hidden: false is listed; an empty table gives no lines', () => {
    expect(helpOptions({ options: { a: opt({ hidden: false }) } }).map(([n]) => n)).toEqual(['a']);
    expect(helpOptions({ options: {} })).toEqual([]);
  });
});

describe('out', () => {
  afterEach(() => captureOutput(null));
  it('writes the text to stdout (descriptor 1) as it is, no newline added', () => {
    const got: Array<[number, string | Uint8Array]> = [];
    captureOutput((fd, data) => got.push([fd, data]));
    out('a line');
    out('');
    expect(got).toEqual([[1, 'a line'], [1, '']]);
  });
});

describe('defaultContext', () => {
  afterEach(() => captureOutput(null));
  const parser = {} as CommandParser;
  const list: NfqlbCommand[] = [];

  it('hands on the parser and the command list and writes with out()', () => {
    const commands = jest.fn(() => list);
    const ctx = defaultContext(parser, commands);
    expect(ctx.parser).toBe(parser);
    expect(commands).not.toHaveBeenCalled();
    expect(ctx.commands()).toBe(list);
    const got: string[] = [];
    captureOutput((_fd, data) => got.push(data.toString()));
    ctx.out('x');
    expect(got).toEqual(['x']);
  });

  it('gives the /dev/shm table store', () => {
    const { shmTableStore } = jest.requireActual<typeof import('../../../src/tables/tablestore')>('../../../src/tables/tablestore');
    expect(defaultContext(parser, () => list).store).toBe(shmTableStore);
  });

  it('loads the table store (and the shm addon wrapper) only when a command first uses it', () => {
    // A child on the compiled modules (dist/: `npx tsc -p .`): jest's module registry does not show what Node loaded.
    const script = `
      const loaded = () => Object.keys(require.cache).filter((k) => /tablestore|addon.shm/.test(k)).length;
      const c = require(${JSON.stringify(path.join(ROOT, 'dist', 'cli', 'command.js'))});
      const ctx = c.defaultContext({}, () => []);
      const before = loaded();
      void ctx.store;
      process.stdout.write(before + ' ' + loaded());`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('0 2');
  });
});

describe('setOwnProcess / isOwnProcess', () => {
  it('is false until setOwnProcess() is called, then true', () => {
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a fresh copy of the module's state
      const fresh = require('../../../src/cli/command') as typeof import('../../../src/cli/command');
      expect(fresh.isOwnProcess()).toBe(false);
      fresh.setOwnProcess();
      expect(fresh.isOwnProcess()).toBe(true);
    });
    // This file's own copy is untouched by the isolated one.
    expect(isOwnProcess()).toBe(false);
    setOwnProcess();
    expect(isOwnProcess()).toBe(true);
  });
});
