/** Runs `nfqlb` in-process (main()) or as a child (bin/nfqlb) and captures its output. */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { main } from '../../src/cli/main';
import { captureOutput } from '../../src/cli/output';

export interface CliRun {
  rc: number;
  stdout: string;
  stderr: string;
}

export const ROOT = path.join(__dirname, '..', '..');
export const NFQLB_BIN = path.join(ROOT, 'bin', 'nfqlb');

/** main(words) with stdout/stderr captured. */
export async function runInProcess(words: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const o = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += chunk.toString();
    return true;
  });
  const e = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    return true;
  });
  // The CLI writes to descriptors 1 and 2 itself (src/cli/output.ts); commands that stream (trace) use process.stdout.
  captureOutput((fd, chunk) => {
    if (fd === 1) stdout += chunk.toString();
    else stderr += chunk.toString();
  });
  try {
    const rc = await main(words);
    return { rc, stdout, stderr };
  } finally {
    captureOutput(null);
    o.mockRestore();
    e.mockRestore();
  }
}

/** bin/nfqlb words, synchronously (needs dist/: run `npx tsc -p .` first). */
export function runSpawned(words: string[], env: NodeJS.ProcessEnv = process.env): CliRun {
  const r = spawnSync(process.execPath, [NFQLB_BIN, ...words], { encoding: 'utf8', env });
  return { rc: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
