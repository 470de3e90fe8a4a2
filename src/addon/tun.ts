/**
 * The tun device of `--tun`: out-of-order fragments kept by the fragment
 * store (src/fragments/store.ts) are written to it once their first fragment is
 * decided; the kernel receives them on the tun device in the load balancer's
 * namespace, they pass PREROUTING again, come back through the queue and find
 * the stored choice.
 *
 * The device is opened once, by the daemon (a tun device without multi_queue
 * takes one file at a time: a second open fails with EBUSY). Its fd is a plain
 * number, valid in every thread of the process, so whoever runs a pipeline
 * writes with it (flushReinjections, once per batch).
 */
import { errnoName, NfqlbError } from '../base/errors';
import { native } from './native';

/** What flushReinjections writes: packet i < pendingCount is bytes[pendingOffsets[i], +pendingLengths[i]) (a FragmentStore). */
export interface ReinjectionList {
  readonly bytes: Uint8Array;
  readonly pendingOffsets: Uint32Array;
  readonly pendingLengths: Uint32Array;
  readonly pendingCount: number;
  /** Frees the list after `written` of its packets were written. */
  flushed(written: number): void;
}

export interface TunDevice {
  readonly name: string;
  /** The /dev/net/tun file attached to the device; -1 once closed. */
  fd: number;
  /** The device's MTU when it was opened. */
  readonly mtu: number;
}

/** The commands that make a device the daemon can use. */
export function tunSetupAdvice(name: string, mtu: number): string {
  return `ip tuntap add ${name} mode tun; ip link set ${name} mtu ${mtu} up`;
}

/** errno (C's positive or Node's negative) of an NfqlbError from the addon, as a name. */
function errnoOf(err: unknown): string | undefined {
  const e = (err as { errno?: unknown } | null)?.errno;
  return typeof e === 'number' ? errnoName(-Math.abs(e)) : undefined;
}

/**
 * Opens the existing tun device `name` for re-injection, checking that it
 * exists, is up and has an MTU of at least `mtu` (--mtu: a kept copy is up to
 * that long). Throws NfqlbError NFQLB_ERR_TUN with one line saying what is
 * wrong and what to do.
 */
export function openTun(name: string, mtu: number): TunDevice {
  const advice = tunSetupAdvice(name, mtu);
  if (name === '' || Buffer.byteLength(name) > 15 || name.includes('/') || /\s/.test(name)) {
    throw new NfqlbError(`--tun=${name} is not a device name (1-15 bytes, no '/' or space); create a tun device: ${advice}`, 'NFQLB_ERR_TUN');
  }
  let info: { index: number; mtu: number; up: boolean };
  try {
    info = native().netdevInfo(name);
  } catch (err) {
    const e = errnoOf(err);
    if (e === 'ENODEV') throw new NfqlbError(`tun device ${name} does not exist; create it: ${advice}`, 'NFQLB_ERR_TUN', { cause: err });
    throw new NfqlbError(`cannot read tun device ${name}: ${(err as Error).message}; check it: ip link show ${name}`, 'NFQLB_ERR_TUN', { cause: err });
  }
  if (info.mtu < mtu) {
    throw new NfqlbError(`tun device ${name} has MTU ${info.mtu}, less than --mtu=${mtu}; raise it: ip link set ${name} mtu ${mtu}`, 'NFQLB_ERR_TUN');
  }
  let fd: number;
  try {
    fd = native().tunOpen(name);
  } catch (err) {
    const e = errnoOf(err);
    let why: string;
    if (e === 'EINVAL') why = `${name} is not a tun device without multi_queue (a tap, veth, ...); create one: ${advice}`;
    else if (e === 'EBUSY') why = `tun device ${name} is in use by another process (one daemon per device); create another and give its name: ${tunSetupAdvice('NAME', mtu)}; --tun=NAME`;
    else if (e === 'EPERM' || e === 'EACCES') why = `opening tun device ${name} needs CAP_NET_ADMIN, or create it for this user: ip tuntap add ${name} mode tun user $(id -u)`;
    else if (e === 'ENOENT') why = `/dev/net/tun is missing; load the tun module (modprobe tun) or mount the device into the container`;
    else if (e === 'ENODEV') why = `tun device ${name} does not exist; create it: ${advice}`;
    else why = `cannot open tun device ${name}: ${(err as Error).message}`;
    throw new NfqlbError(why, 'NFQLB_ERR_TUN', { cause: err });
  }
  // Checked after the open, so a veth or tap that is down is named as not a tun device first.
  if (!info.up) {
    native().tunClose(fd);
    throw new NfqlbError(`tun device ${name} is down; bring it up: ip link set ${name} up`, 'NFQLB_ERR_TUN');
  }
  return { name, fd, mtu: info.mtu };
}

/** EBADFD: libuv has no name for it, so errnoName would print "Unknown system error -77". */
const EBADFD = 77;

/**
 * What a failed re-injection write to `name` with positive `errno` means, for
 * the log line. EBADFD is what the kernel answers once the device was deleted
 * under the daemon: the open file stays detached even when a device of the
 * same name is created again, so only a restart brings re-injection back.
 */
export function tunWriteErrorText(name: string, errno: number): string {
  if (errno === 0) return name;
  if (errno === EBADFD) return `${name} (EBADFD: the device was deleted; create it again and restart the daemon)`;
  return `${name} (${errnoName(-errno)})`;
}

/** Closes the device's file (idempotent). */
export function closeTun(tun: TunDevice): void {
  if (tun.fd < 0) return;
  native().tunClose(tun.fd);
  tun.fd = -1;
}

/**
 * Writes the store's re-injection list to the tun device `fd` (one native
 * call) and frees it; returns how many copies were written. A failed write
 * is counted by the list (FragmentStore: FSTORE_WRITE_ERRORS) and its errno left in errnoOut[0]. Once per
 * batch, after the decisions; nothing is allocated.
 */
export function flushReinjections(fd: number, store: ReinjectionList, errnoOut?: Int32Array): number {
  const n = store.pendingCount;
  if (n === 0) return 0;
  const written = fd < 0 ? 0 : native().tunWriteBatch(fd, store.bytes, store.pendingOffsets, store.pendingLengths, n, errnoOut);
  store.flushed(written);
  return written;
}
