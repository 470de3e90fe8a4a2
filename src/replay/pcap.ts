/**
 * Reads classic pcap files (not pcapng) into IP packets, for `nfqlb replay` and
 * the tests. Link types: RAW (101), IPv4 (228), IPv6 (229), Ethernet (1, with
 * 802.1Q/802.1ad tags), Linux cooked v1 (113) and v2 (276). Frames that do not
 * carry IPv4/IPv6 are reported with `ip === null` so callers keep record numbers.
 */
import * as fs from 'node:fs';
import { NfqlbError } from '../base/errors';

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;
export const LINKTYPE_LINUX_SLL2 = 276;

export interface PcapRecord {
  /** Record number in the file, from 0. */
  index: number;
  /** Capture time in milliseconds since the epoch (fractional). */
  timeMs: number;
  /** The IP packet (a view into the file buffer), or null when the frame is not IPv4/IPv6. */
  ip: Uint8Array | null;
  /** Original length on the wire of the whole frame. */
  origLen: number;
}

export interface Pcap {
  linkType: number;
  /** Every complete record, in file order (up to the first defect). */
  records: PcapRecord[];
  /**
   * What stopped the reading before the end of the file (a record cut short,
   * a record claiming more than MAX_RECORD_LEN bytes), or null. The records
   * before it are in `records`; callers use them and then report this.
   */
  error: NfqlbError | null;
}

/** libpcap's MAXIMUM_SNAPLEN: no capture tool writes a longer record, so a longer one is corruption. */
export const MAX_RECORD_LEN = 262144;

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_QINQ = 0x88a8;

function ipByVersion(frame: Uint8Array): Uint8Array | null {
  if (frame.length < 1) return null;
  const v = frame[0] >> 4;
  return v === 4 || v === 6 ? frame : null;
}

function ipByEthertype(type: number, payload: Uint8Array): Uint8Array | null {
  return type === ETHERTYPE_IPV4 || type === ETHERTYPE_IPV6 ? payload : null;
}

function ipFromFrame(linkType: number, frame: Uint8Array): Uint8Array | null {
  switch (linkType) {
    case LINKTYPE_RAW:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
      return ipByVersion(frame);
    case LINKTYPE_ETHERNET: {
      let pos = 12;
      while (pos + 2 <= frame.length) {
        const type = (frame[pos] << 8) | frame[pos + 1];
        if (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) {
          pos += 4;
          continue;
        }
        return ipByEthertype(type, frame.subarray(pos + 2));
      }
      return null;
    }
    case LINKTYPE_LINUX_SLL:
      if (frame.length < 16) return null;
      return ipByEthertype((frame[14] << 8) | frame[15], frame.subarray(16));
    case LINKTYPE_LINUX_SLL2:
      if (frame.length < 20) return null;
      return ipByEthertype((frame[0] << 8) | frame[1], frame.subarray(20));
    default:
      return null;
  }
}

const SUPPORTED = [LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2];

/**
 * Parses a whole pcap file held in memory. Throws NfqlbError NFQLB_ERR_PCAP for
 * files that are not classic pcap or use an unsupported link type. Reading
 * stops at the first record that is cut short (header or data) or claims more
 * than MAX_RECORD_LEN bytes: the complete records before it are returned with
 * the defect in `error` (NFQLB_ERR_PCAP). Never reads outside `data`.
 */
export function parsePcap(data: Uint8Array, name = 'pcap'): Pcap {
  if (data.length < 24) throw new NfqlbError(`${name}: not a pcap file (only ${data.length} bytes)`, 'NFQLB_ERR_PCAP');
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const magicBE = view.getUint32(0, false);
  let little: boolean;
  let nano: boolean;
  switch (magicBE) {
    case 0xa1b2c3d4: little = false; nano = false; break;
    case 0xd4c3b2a1: little = true; nano = false; break;
    case 0xa1b23c4d: little = false; nano = true; break;
    case 0x4d3cb2a1: little = true; nano = true; break;
    case 0x0a0d0d0a:
      throw new NfqlbError(`${name}: pcapng is not supported; convert it with 'editcap -F pcap IN OUT' or 'tcpdump -r IN -w OUT'`, 'NFQLB_ERR_PCAP');
    default:
      throw new NfqlbError(`${name}: not a pcap file (magic 0x${magicBE.toString(16).padStart(8, '0')})`, 'NFQLB_ERR_PCAP');
  }
  const linkType = view.getUint32(20, little) & 0x0fffffff;
  if (!SUPPORTED.includes(linkType)) {
    throw new NfqlbError(`${name}: link type ${linkType} is not supported (supported: ${SUPPORTED.join(', ')})`, 'NFQLB_ERR_PCAP');
  }
  const records: PcapRecord[] = [];
  let error: NfqlbError | null = null;
  let pos = 24;
  while (pos < data.length) {
    const n = records.length;
    if (pos + 16 > data.length) {
      error = new NfqlbError(`${name}: record ${n} is cut short: its header needs 16 bytes at byte ${pos}, the file ends after ${data.length - pos}; the ${n} records before it were read`, 'NFQLB_ERR_PCAP');
      break;
    }
    const sec = view.getUint32(pos, little);
    const frac = view.getUint32(pos + 4, little);
    const capLen = view.getUint32(pos + 8, little);
    const origLen = view.getUint32(pos + 12, little);
    if (capLen > MAX_RECORD_LEN) {
      error = new NfqlbError(`${name}: record ${n} at byte ${pos} claims ${capLen} bytes, more than a pcap record holds (${MAX_RECORD_LEN}): the file is corrupt; the ${n} records before it were read`, 'NFQLB_ERR_PCAP');
      break;
    }
    pos += 16;
    if (pos + capLen > data.length) {
      error = new NfqlbError(`${name}: record ${n} is cut short: it claims ${capLen} bytes at byte ${pos}, the file ends after ${data.length - pos}; the ${n} records before it were read`, 'NFQLB_ERR_PCAP');
      break;
    }
    const frame = data.subarray(pos, pos + capLen);
    records.push({
      index: records.length,
      timeMs: sec * 1000 + (nano ? frac / 1e6 : frac / 1e3),
      ip: ipFromFrame(linkType, frame),
      origLen,
    });
    pos += capLen;
  }
  return { linkType, records, error };
}

/** Reads and parses a pcap file; file errors become NfqlbError NFQLB_ERR_PCAP. */
export function readPcap(file: string): Pcap {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new NfqlbError(`cannot read ${file}: ${(err as Error).message}`, 'NFQLB_ERR_PCAP', { cause: err });
  }
  return parsePcap(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), file);
}

/** Serialises IP packets as a RAW (101) pcap file; used by tests and tools. */
export function writePcap(packets: { ip: Uint8Array; timeMs?: number }[]): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(65535, 16);
  header.writeUInt32LE(LINKTYPE_RAW, 20);
  parts.push(header);
  for (const p of packets) {
    const rec = Buffer.alloc(16);
    const t = p.timeMs ?? 0;
    rec.writeUInt32LE(Math.floor(t / 1000), 0);
    rec.writeUInt32LE(Math.round((t % 1000) * 1000), 4);
    rec.writeUInt32LE(p.ip.length, 8);
    rec.writeUInt32LE(p.ip.length, 12);
    parts.push(rec, Buffer.from(p.ip));
  }
  return Buffer.concat(parts);
}
