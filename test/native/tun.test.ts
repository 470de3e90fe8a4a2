/**
 * The tun bindings without changing anything on the machine: a device that
 * does not exist is refused before /dev/net/tun is touched (TUNSETIFF on a
 * free name would create one), `lo` is read, and a batch write to a bad fd
 * counts its failures instead of throwing. Opening and writing a real tun
 * device happen in network namespaces, in test/e2e/fragments-tun.test.ts.
 */
import { thrown } from '../helpers/thrown';
import { native } from '../../src/addon/native';
import { openTun, tunSetupAdvice, tunWriteErrorText } from '../../src/addon/tun';

const MISSING = `nfqx${process.pid % 100000}`;

describe('tun bindings', () => {
  it('netdevInfo reads a device, and names ENODEV for a missing one', () => {
    const lo = native().netdevInfo('lo');
    expect(lo.index).toBeGreaterThan(0);
    expect(lo.mtu).toBeGreaterThanOrEqual(1280);
    const e = thrown(() => native().netdevInfo(MISSING));
    expect(e.code).toBe('NFQLB_ERR_TUN');
    expect(e.errnoName).toBe('ENODEV');
  });

  it('tunOpen refuses a device that does not exist (it would create one)', () => {
    const e = thrown(() => native().tunOpen(MISSING));
    expect([e.code, e.errnoName]).toEqual(['NFQLB_ERR_TUN', 'ENODEV']);
    expect(native().netdevInfo('lo').index).toBeGreaterThan(0);
    expect(() => native().netdevInfo(MISSING)).toThrow();
  });

  it('openTun words what to do, on one line', () => {
    const e = thrown(() => openTun(MISSING, 1500));
    expect(e.message).toBe(`tun device ${MISSING} does not exist; create it: ${tunSetupAdvice(MISSING, 1500)}`);
    expect(thrown(() => openTun('lo', 1 << 20)).message).toMatch(/^tun device lo has MTU \d+, less than --mtu=1048576; raise it: ip link set lo mtu 1048576$/);
    expect(thrown(() => openTun('a/b', 1500)).message).toMatch(/^--tun=a\/b is not a device name/);
  });

  it('a failed write is named in the log line; EBADFD (device deleted under the daemon) says to restart', () => {
    expect(tunWriteErrorText('nfqlb0', 0)).toBe('nfqlb0');
    expect(tunWriteErrorText('nfqlb0', 5)).toBe('nfqlb0 (EIO)');
    expect(tunWriteErrorText('nfqlb0', 77)).toBe('nfqlb0 (EBADFD: the device was deleted; create it again and restart the daemon)');
  });

  it('tunWriteBatch counts what it wrote and leaves the errno of a failure; bad arguments are a TypeError', () => {
    const bytes = new Uint8Array(64);
    const errnoOut = new Int32Array(1);
    expect(native().tunWriteBatch(-1, bytes, Uint32Array.of(0, 32), Uint32Array.of(20, 20), 2, errnoOut)).toBe(0);
    expect(errnoOut[0]).toBe(9); // EBADF
    errnoOut[0] = 0;
    expect(native().tunWriteBatch(-1, bytes, Uint32Array.of(60), Uint32Array.of(20), 1, errnoOut)).toBe(0);
    expect(errnoOut[0]).toBe(22); // EINVAL: past the buffer, not read
    expect(() => native().tunWriteBatch(-1, bytes, new Int32Array(1) as unknown as Uint32Array, new Uint32Array(1), 1)).toThrow(/bytes is a Uint8Array, offsets and lengths Uint32Arrays/);
  });
});
