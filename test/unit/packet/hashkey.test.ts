/**
 * Hashing of the 40-byte key (src/packet/hashkey.ts) against nfqlb 1.2.0's own
 * values: every key of the reference captures (test/fixtures/reference/hashkey)
 * hashes to nfqlb's hash_mode 0 and 1 and address-only values; the int32
 * "bits" variants of the packet path carry the same bits; SCTP with hash_mode
 * 1 hashes the ports only.
 */
import {
  djb2, djb2Bits, hashKey, hashKeyAddresses, hashKeyAddressesBits, hashKeyBits, IPPROTO_SCTP, IPPROTO_TCP, KEY_LEN, KEY_PROTO, KEY_SPORT,
} from '../../../src/packet/hashkey';
import { fromHex, readJsonl } from '../../helpers/reference';

interface Line { key?: string; hash0?: number; hash1?: number; hashAddr?: number; expect: string; reference?: { key?: string; hash0?: number; hash1?: number; hashAddr?: number } }

describe('djb2', () => {
  it('is h*33 + byte from 5381, unsigned, and djb2Bits the same bits signed', () => {
    const bytes = Buffer.from('abc');
    expect(djb2(bytes, 0, 0)).toBe(5381);
    expect(djb2(bytes, 0, 1)).toBe(5381 * 33 + 97);
    expect(djb2(bytes, 0, 3)).toBe(((5381 * 33 + 97) * 33 + 98) * 33 + 99);
    // Wrapping at 32 bits as C's unsigned arithmetic, against a BigInt model; keys of every length up to 64.
    const model = (k: Uint8Array): number => Number(k.reduce((h, x) => (h * 33n + BigInt(x)) & 0xffffffffn, 5381n));
    let above = 0;
    for (let n = 0; n <= 64; n++) {
      const k = Uint8Array.from({ length: n }, (_, i) => (i * 151 + n * 7) & 0xff);
      expect(djb2(k, 0, n)).toBe(model(k));
      expect(djb2Bits(k, 0, n)).toBe(model(k) | 0);
      if (model(k) >= 2 ** 31) above++;
    }
    expect(above).toBeGreaterThan(0);
    expect(djb2(bytes, 1, 3)).toBe(djb2(Buffer.from('bc'), 0, 2));
  });
});

describe('nfqlb 1.2.0 reference keys', () => {
  for (const file of ['hashkey/k1.jsonl', 'hashkey/k2.jsonl']) {
    it(`${file}: every key hashes to nfqlb's three values`, () => {
      let checked = 0;
      for (const line of readJsonl<Line>(file)) {
        // `correct` lines carry nfqlb's own key and hashes under `reference`; both pairs must agree.
        for (const v of [line, line.reference ?? {}]) {
          if (v.key === undefined || v.hash0 === undefined) continue;
          const key = fromHex(v.key);
          expect(key.length).toBe(KEY_LEN);
          expect([hashKey(key, 0), hashKey(key, 1), hashKeyAddresses(key)]).toEqual([v.hash0, v.hash1, v.hashAddr]);
          expect([hashKeyBits(key, 0), hashKeyBits(key, 1), hashKeyAddressesBits(key)]).toEqual([v.hash0! | 0, v.hash1! | 0, v.hashAddr! | 0]);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(500);
    });
  }
});

describe('hash_mode 1', () => {
  it('SCTP hashes only the ports (bytes 36-39); other protocols and hash_mode 0 the whole key', () => {
    const a = new Uint8Array(KEY_LEN);
    const b = new Uint8Array(KEY_LEN);
    a.set([192, 0, 2, 1], 12);
    b.set([198, 51, 100, 7], 12);
    for (const k of [a, b]) k.set([0x13, 0x88, 0x0f, 0xa0], KEY_SPORT);
    a[KEY_PROTO] = b[KEY_PROTO] = IPPROTO_SCTP;
    expect(hashKey(a, 1)).toBe(hashKey(b, 1));
    expect(hashKey(a, 1)).toBe(djb2(a, KEY_SPORT, KEY_LEN));
    expect(hashKey(a, 0)).not.toBe(hashKey(b, 0));
    a[KEY_PROTO] = b[KEY_PROTO] = IPPROTO_TCP;
    expect(hashKey(a, 1)).not.toBe(hashKey(b, 1));
    // A protocol number whose low byte is SCTP's is not SCTP.
    a[KEY_PROTO] = b[KEY_PROTO] = IPPROTO_SCTP;
    a[KEY_PROTO + 1] = b[KEY_PROTO + 1] = 1;
    expect(hashKey(a, 1)).toBe(djb2(a, 0, KEY_LEN));
  });
});
