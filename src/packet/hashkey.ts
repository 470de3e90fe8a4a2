/**
 * The 40-byte hash key of nfqlb and the djb2 hash over it.
 *
 *   0-15  source address (IPv6; IPv4 as ::ffff:a.b.c.d)
 *   16-31 destination address
 *   32-35 id: ICMP echo id (32-33), IPv4 fragment id (32-33) or IPv6 ident (32-35)
 *   34-35 L4 protocol, little-endian u16 (overlaps the IPv6 ident of a later fragment)
 *   36-37 source port, network order
 *   38-39 destination port, network order
 */
export const KEY_LEN = 40;
export const KEY_SRC = 0;
export const KEY_DST = 16;
export const KEY_ID = 32;
export const KEY_PROTO = 34;
export const KEY_SPORT = 36;
export const KEY_DPORT = 38;
export const KEY_ADDR_END = 32;

/** The key's protocol (bytes 34-35, little-endian). */
export function keyProto(key: Uint8Array): number {
  return key[KEY_PROTO] | (key[KEY_PROTO + 1] << 8);
}
/** The key's source port (bytes 36-37, network order). */
export function keySport(key: Uint8Array): number {
  return (key[KEY_SPORT] << 8) | key[KEY_SPORT + 1];
}
/** The key's destination port (bytes 38-39, network order). */
export function keyDport(key: Uint8Array): number {
  return (key[KEY_DPORT] << 8) | key[KEY_DPORT + 1];
}

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;

/**
 * djb2 (h = h*33 + byte, from 5381) over key[start, end), as a signed 32-bit
 * number: the same bits as djb2(), for the per-packet path. A uint32 above
 * 2^31-1 is no small integer in V8, and returning one from a function costs a
 * heap number per packet; an int32 costs nothing. `bits >>> 0` is the djb2().
 */
export function djb2Bits(key: Uint8Array, start: number, end: number): number {
  let h = 5381;
  for (let i = start; i < end; i++) {
    // Math.imul keeps the multiply exact in 32 bits; | 0 keeps the sum there.
    h = (Math.imul(h, 33) + key[i]) | 0;
  }
  return h;
}

/** djb2 (h = h*33 + byte, from 5381) over key[start, end), as an unsigned 32-bit number. */
export function djb2(key: Uint8Array, start: number, end: number): number {
  return djb2Bits(key, start, end) >>> 0;
}

/**
 * nfqlb's hashKey() as int32 bits (see djb2Bits): with hash_mode 1, SCTP
 * hashes only the ports (bytes 36-39), so every path of a multihomed
 * association lands on the same target. Prerequisite: key.length >= KEY_LEN.
 */
export function hashKeyBits(key: Uint8Array, hashMode: number): number {
  if (hashMode === 1 && key[KEY_PROTO] === IPPROTO_SCTP && key[KEY_PROTO + 1] === 0) {
    return djb2Bits(key, KEY_SPORT, KEY_LEN);
  }
  return djb2Bits(key, 0, KEY_LEN);
}

/**
 * The hash key of a 5-tuple as classify() builds it from a packet: 16-byte
 * addresses (IPv4 mapped as ::ffff:a.b.c.d), no id, the protocol (0: none),
 * the ports big-endian. For `nfqlb fwmark` and `nfqlb conntrack`.
 */
export function tupleKey(src: Uint8Array, sport: number, dst: Uint8Array, dport: number, proto: number): Uint8Array {
  const key = new Uint8Array(KEY_LEN);
  key.set(src, KEY_SRC);
  key.set(dst, KEY_DST);
  key[KEY_PROTO] = proto & 0xff;
  key[KEY_PROTO + 1] = proto >> 8;
  key[KEY_SPORT] = sport >> 8;
  key[KEY_SPORT + 1] = sport & 0xff;
  key[KEY_DPORT] = dport >> 8;
  key[KEY_DPORT + 1] = dport & 0xff;
  return key;
}

/** nfqlb's hashKey(), unsigned (hashKeyBits(key, hashMode) >>> 0). */
export function hashKey(key: Uint8Array, hashMode: number): number {
  return hashKeyBits(key, hashMode) >>> 0;
}

/** Address-only hash (bytes 0-31) as int32 bits, for the LB tier on the per-packet path. */
export function hashKeyAddressesBits(key: Uint8Array): number {
  return djb2Bits(key, 0, KEY_ADDR_END);
}

/** Address-only hash (bytes 0-31), used by `fwmark` without --proto and for the LB tier. */
export function hashKeyAddresses(key: Uint8Array): number {
  return djb2Bits(key, 0, KEY_ADDR_END) >>> 0;
}
