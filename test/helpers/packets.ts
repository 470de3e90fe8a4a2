/** Hand-made IPv4/IPv6 packets for unit tests (checksums left 0: nothing here checks them). */

function addr4(a: string): number[] {
  return a.split('.').map(Number);
}

function addr6(a: string): number[] {
  const [head, tail] = a.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined ? [] : tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

export function udp(sport: number, dport: number, payload: number[] = [1, 2, 3, 4]): number[] {
  const len = 8 + payload.length;
  return [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, len >> 8, len & 0xff, 0, 0, ...payload];
}

export function tcp(sport: number, dport: number, flags = 0x02): number[] {
  return [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0];
}

export function icmpEcho(id: number, seq = 1): number[] {
  return [8, 0, 0, 0, id >> 8, id & 0xff, seq >> 8, seq & 0xff, 0xaa, 0xbb];
}

export interface Ipv4Options {
  id?: number;
  moreFragments?: boolean;
  /** In 8-byte units. */
  fragOffset?: number;
}

export function ipv4(src: string, dst: string, proto: number, l4: number[], o: Ipv4Options = {}): Uint8Array {
  const len = 20 + l4.length;
  const id = o.id ?? 0;
  const frag = ((o.moreFragments ? 0x2000 : 0) | (o.fragOffset ?? 0)) & 0xffff;
  return Uint8Array.from([
    0x45, 0, len >> 8, len & 0xff, id >> 8, id & 0xff, frag >> 8, frag & 0xff, 64, proto, 0, 0,
    ...addr4(src), ...addr4(dst), ...l4,
  ]);
}

export function ipv6(src: string, dst: string, nextHeader: number, payload: number[]): Uint8Array {
  const len = payload.length;
  return Uint8Array.from([0x60, 0, 0, 0, len >> 8, len & 0xff, nextHeader, 64, ...addr6(src), ...addr6(dst), ...payload]);
}
