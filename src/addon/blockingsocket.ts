/**
 * A non-blocking connect to an abstract unix socket with nfqlb's exact
 * address length, for a command line that must not load node:net (its
 * start-up is paid once per Meridio change): the descriptor is then used with
 * plain read/write calls (src/cli/client.ts).
 */
import { native } from './native';

export type UnixConnectResult = { fd: number } | { errno: number; syscall: string };

/** Connects to the abstract name in `name` (without the leading NUL); an errno instead of a throw. */
export function unixConnect(name: Buffer): UnixConnectResult {
  return (native() as unknown as { unixConnect(name: Buffer): UnixConnectResult }).unixConnect(name);
}
