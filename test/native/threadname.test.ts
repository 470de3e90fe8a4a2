/**
 * setThreadName names the OS thread that calls it, and only that one: a
 * worker thread that names itself shows under that name in /proc (what the
 * bench's per-thread CPU, top -H and perf read), the main thread keeps its own.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

const DIST_NATIVE = path.join(__dirname, '..', '..', 'dist', 'addon', 'native.js');

function comms(): string[] {
  return fs.readdirSync('/proc/self/task').map((tid) => fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
}

describe('setThreadName', () => {
  it('names a worker thread (cut to 15 bytes) and leaves the main thread as it was', async () => {
    const mainBefore = fs.readFileSync('/proc/thread-self/comm', 'utf8');
    const name = `nfqlbts-${process.pid % 100000}-named-thread`;
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const fs = require('node:fs');
       const ok = require(workerData.dist).native().setThreadName(workerData.name);
       parentPort.postMessage({ ok, comm: fs.readFileSync('/proc/thread-self/comm', 'utf8').trim() });
       parentPort.once('message', () => process.exit(0));`,
      { eval: true, workerData: { dist: DIST_NATIVE, name } },
    );
    try {
      const reply = await new Promise<{ ok: boolean; comm: string }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      expect(reply).toEqual({ ok: true, comm: name.slice(0, 15) });
      expect(comms()).toContain(name.slice(0, 15));
      expect(fs.readFileSync('/proc/thread-self/comm', 'utf8')).toBe(mainBefore);
    } finally {
      worker.postMessage('exit');
      await worker.terminate();
    }
  });

  it('refuses a name that is not a string', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { native } = require(DIST_NATIVE) as typeof import('../../src/addon/native');
    expect(() => (native().setThreadName as (n: unknown) => boolean)(15)).toThrow(/needs a string/);
  });
});
