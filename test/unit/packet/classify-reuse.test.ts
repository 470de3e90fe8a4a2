/**
 * The per-packet key clearing (word stores over the key's
 * buffer instead of fill): one PacketInfo is reused for every packet of a
 * batch, so an IPv4 packet after an IPv6 one (whose key fills all of it) must
 * get exactly the key a fresh PacketInfo gives it, to the last byte.
 */
import { KEY_LEN } from '../../../src/packet/hashkey';
import { classify, PacketInfo } from '../../../src/packet/classify';

function udp4(): Uint8Array {
  const p = new Uint8Array(28);
  p.set([0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 7, 192, 0, 2, 1]);
  p.set([0x9c, 0x41, 0x13, 0x8b, 0, 8, 0, 0], 20);
  return p;
}

function udp6(): Uint8Array {
  const p = new Uint8Array(48);
  p.set([0x60, 0, 0, 0, 0, 8, 17, 64]);
  for (let i = 0; i < 16; i++) p[8 + i] = 0xf0 | (i & 15); // every source byte non-zero
  for (let i = 0; i < 16; i++) p[24 + i] = 0xe0 | (i & 15);
  p.set([0xff, 0xfe, 0xfd, 0xfc, 0, 8, 0, 0], 40);
  return p;
}

describe('a reused PacketInfo', () => {
  it('the key is whole words (the clearing covers every byte)', () => {
    expect(KEY_LEN % 4).toBe(0);
    expect(new PacketInfo().keyWords.byteLength).toBe(KEY_LEN);
  });

  it('IPv4 after IPv6: the same key as a fresh PacketInfo, no byte of the IPv6 key left', () => {
    const fresh = new PacketInfo();
    const v4 = udp4();
    expect(classify(v4, 0, v4.length, 0, fresh)).toBeGreaterThanOrEqual(0);
    const reused = new PacketInfo();
    const v6 = udp6();
    expect(classify(v6, 0, v6.length, 0, reused)).toBeGreaterThanOrEqual(0);
    expect(reused.key.every((b) => b === 0)).toBe(false);
    classify(v4, 0, v4.length, 0, reused);
    expect(Buffer.from(reused.key).toString('hex')).toBe(Buffer.from(fresh.key).toString('hex'));
  });
});
