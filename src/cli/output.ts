/**
 * stdout and stderr of a command line as plain write(2)s on descriptors 1
 * and 2. `process.stdout` is a stream: its first use loads Node's stream
 * modules, and for a pipe (Meridio captures every nfqlb's output through
 * one) node:net as well, which is a large part of a short command's
 * start-up. The bytes are the same; the writes are complete before the
 * process exits, as with Node's own (synchronous) pipes and files.
 */
import { writeSync } from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

function writeAll(fd: number, data: string | Uint8Array): void {
  let bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  while (bytes.length > 0) {
    let n: number;
    try {
      n = writeSync(fd, bytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A descriptor left non-blocking by whoever made it: wait for room.
      if (code === 'EAGAIN') {
        Atomics.wait(pause, 0, 0, 1);
        continue;
      }
      // The reader is gone (nfqlb dies of SIGPIPE here); nothing left to say to it.
      if (code === 'EPIPE') return;
      throw err;
    }
    bytes = bytes.subarray(n);
  }
}

/** Where output goes instead of the descriptors (tests running main() in-process), or null. */
export type OutputSink = (fd: 1 | 2, data: string | Uint8Array) => void;
let sink: OutputSink | null = null;

/** Sends what writeOut/writeErr get to `to` instead (null: back to descriptors 1 and 2). */
export function captureOutput(to: OutputSink | null): void {
  sink = to;
}

/** Writes to stdout. */
export function writeOut(data: string | Uint8Array): void {
  if (sink !== null) sink(1, data);
  else writeAll(1, data);
}

/** Writes to stderr. */
export function writeErr(data: string | Uint8Array): void {
  if (sink !== null) sink(2, data);
  else writeAll(2, data);
}
