/**
 * The processes and shm objects the test bed starts and makes, registered so
 * that cleanupAll() kills and unlinks them (and deletes the namespaces) even
 * when a test failed halfway; where the repository's programs are.
 */
import { ChildProcess, spawn, SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { deleteAllNetns, NS_PREFIX, own } from './netns';

/**
 * The repository root: this file runs as testbed/*.ts (jest) or from a
 * dist/testbed/ (compiled). The first directory up with package.json and
 * bin/nfqlb, the repository's root.
 */
export const ROOT = findRoot(__dirname);
function findRoot(dir: string): string {
  while (!fs.existsSync(path.join(dir, 'package.json')) || !fs.existsSync(path.join(dir, 'bin', 'nfqlb'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`testbed: no package.json with bin/nfqlb above ${__dirname}`);
    dir = up;
  }
  return dir;
}
export const NFQLB_BIN = path.join(ROOT, 'bin', 'nfqlb');
export const TESTBED_JS = path.join(ROOT, 'testbed', 'dist', 'testbed', 'testbed.js');

const processes = new Set<ChildProcess>();
const shmObjects = new Set<string>();
let traceShmExisted: boolean | null = null;

/** Spawns `ip netns exec <ns> cmd args` (registered: killed by cleanupAll). */
export function spawnInNs(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', own(ns), cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  processes.add(child);
  child.once('exit', () => processes.delete(child));
  return child;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** Kills a registered process (SIGTERM, then SIGKILL after `graceMs`). */
export async function killProcess(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    await waitExit(child, graceMs);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, graceMs);
    }
  }
  processes.delete(child);
}

/**
 * A shm name no other test run uses (`tshm-<pid>-<random>-<tag>`), registered
 * so cleanupAll() unlinks /dev/shm/<name>. Also notes whether nfqlb-trace
 * existed, so that cleanupAll() removes it only when this run made it.
 */
export function uniqueShmName(tag: string): string {
  noteTraceShm();
  const name = `tshm-${NS_PREFIX.slice('nfqlbts-'.length)}${tag}`;
  shmObjects.add(name);
  return name;
}

/** Registers an shm object made under another name for cleanup. */
export function registerShm(name: string): void {
  noteTraceShm();
  shmObjects.add(name);
}

/** Call before starting a daemon: remembers whether /dev/shm/nfqlb-trace was there. */
export function noteTraceShm(): void {
  if (traceShmExisted === null) traceShmExisted = fs.existsSync('/dev/shm/nfqlb-trace');
}

function unlinkShm(name: string): void {
  try {
    fs.unlinkSync(`/dev/shm/${name}`);
  } catch {
    // Already gone.
  }
}

/** Kills every registered process, deletes every namespace and shm object this process made. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...processes].map((p) => killProcess(p, 1000)));
  deleteAllNetns();
  for (const name of shmObjects) unlinkShm(name);
  shmObjects.clear();
  if (traceShmExisted === false) unlinkShm('nfqlb-trace');
  traceShmExisted = null;
}
