/**
 * Packet classification: reduce one raw IPv4/IPv6 packet (as NFQUEUE delivers
 * it, no link header) to nfqlb's 40-byte hash key and a classification code
 * (SPEC.md §4). This is on the per-packet path: it writes into a caller-owned
 * PacketInfo, allocates nothing, never throws, and never reads outside
 * pkt[off, off+len).
 */
import { KEY_LEN } from './hashkey';

/** Classification bits, as nfqlb's getHashKey() returns them. */
export const RC_INVALID = -1;
export const RC_FIRST_FRAGMENT = 1;
export const RC_LATER_FRAGMENT = 2;
export const RC_UDP_ENCAP = 4;
export const RC_ICMP_ERROR = 8;
export const RC_ICMP_OTHER = 16;
export const RC_OTHER_PROTO = 32;

/** What classify() found out about one packet. Reused across packets. */
export class PacketInfo {
  /** The hash key (layout in hashkey.ts). */
  readonly key = new Uint8Array(KEY_LEN);
  /** Classification bit set, or RC_INVALID. */
  rc = RC_INVALID;
  /** 4 or 6. */
  ipVersion = 0;
  /** Protocol in the key (after SCTP-over-UDP and ICMP-error handling). */
  proto = 0;
  /** Ports in the key, host order. */
  sport = 0;
  dport = 0;
  /** Fragment identification (IPv4 id or IPv6 ident) when rc has bit 1 or 2. */
  fragId = 0;
  /**
   * Offset in the packet buffer of the L4 header whose fields fill the key
   * (inner header for ICMP errors and SCTP over UDP), and the bytes available
   * from it to the end of the packet; -1 and 0 when there is none.
   */
  l4Offset = -1;
  l4Len = 0;
  /** ICMP/ICMPv6 type and code of the outer ICMP header, -1 when not ICMP. */
  icmpType = -1;
  icmpCode = -1;
}

/**
 * Classifies pkt[off, off+len) into `info` and returns info.rc.
 * `udpencap` is the UDP port carrying SCTP (0: none).
 */
export declare function classify(pkt: Uint8Array, off: number, len: number, udpencap: number, info: PacketInfo): number;
