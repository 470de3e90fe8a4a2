/**
 * The pcap reader on files built here byte by byte: both byte orders and
 * timestamp resolutions, every supported link type (with frames that carry
 * no IP kept as records with `ip: null`), and the defects a capture can have
 * (pcapng, a foreign file, an unsupported link type, a record cut short in
 * its header or data, a record length no capture tool writes). A defect in
 * the records keeps every complete record before it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW,
  MAX_RECORD_LEN, parsePcap, readPcap, writePcap,
} from '../../../src/replay/pcap';

/** A minimal IPv4 header (20 bytes) and IPv6 header (40 bytes): the reader looks at the version nibble only. */
const IPV4 = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
const IPV6 = (() => {
  const b = new Uint8Array(40);
  b[0] = 0x60;
  return b;
})();

interface Rec { sec?: number; frac?: number; data: Uint8Array; capLen?: number; origLen?: number }

/** A classic pcap file: magic as written in `order`, then records (capLen defaults to the data length). */
function pcapFile(linkType: number, records: Rec[], opts: { bigEndian?: boolean; nano?: boolean } = {}): Uint8Array {
  const le = opts.bigEndian !== true;
  const header = Buffer.alloc(24);
  const u32 = (b: Buffer, v: number, off: number): number => (le ? b.writeUInt32LE(v, off) : b.writeUInt32BE(v, off));
  u32(header, opts.nano === true ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  if (le) { header.writeUInt16LE(2, 4); header.writeUInt16LE(4, 6); } else { header.writeUInt16BE(2, 4); header.writeUInt16BE(4, 6); }
  u32(header, 65535, 16);
  u32(header, linkType, 20);
  const parts: Buffer[] = [header];
  for (const r of records) {
    const h = Buffer.alloc(16);
    u32(h, r.sec ?? 0, 0);
    u32(h, r.frac ?? 0, 4);
    u32(h, r.capLen ?? r.data.length, 8);
    u32(h, r.origLen ?? r.data.length, 12);
    parts.push(h, Buffer.from(r.data));
  }
  return new Uint8Array(Buffer.concat(parts));
}

const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));
const ethernet = (type: number, payload: Uint8Array, tags: number[] = []): Uint8Array => {
  const h = Buffer.alloc(12 + 4 * tags.length + 2);
  tags.forEach((t, i) => { h.writeUInt16BE(t, 12 + 4 * i); h.writeUInt16BE(100 + i, 14 + 4 * i); });
  h.writeUInt16BE(type, 12 + 4 * tags.length);
  return concat(h, payload);
};
const sll = (type: number, payload: Uint8Array): Uint8Array => { const h = Buffer.alloc(16); h.writeUInt16BE(type, 14); return concat(h, payload); };
const sll2 = (type: number, payload: Uint8Array): Uint8Array => { const h = Buffer.alloc(20); h.writeUInt16BE(type, 0); return concat(h, payload); };

const ips = (data: Uint8Array): Array<number[] | null> => parsePcap(data).records.map((r) => (r.ip === null ? null : [...r.ip]));

describe('file header', () => {
  it('reads both byte orders and both timestamp resolutions', () => {
    for (const bigEndian of [false, true]) {
      const micro = parsePcap(pcapFile(LINKTYPE_RAW, [{ sec: 1700000000, frac: 250000, data: IPV4, origLen: 1500 }], { bigEndian }));
      expect(micro.records).toEqual([{ index: 0, timeMs: 1700000000250, ip: IPV4, origLen: 1500 }]);
      expect(micro.error).toBeNull();
      const nano = parsePcap(pcapFile(LINKTYPE_RAW, [{ sec: 2, frac: 1500000, data: IPV4 }], { bigEndian, nano: true }));
      expect(nano.records[0].timeMs).toBe(2001.5);
    }
  });

  it('refuses pcapng with the command that converts it', () => {
    const ng = new Uint8Array(Buffer.from('0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff', 'hex'));
    expect(() => parsePcap(ng, 'cap.pcapng')).toThrow("cap.pcapng: pcapng is not supported; convert it with 'editcap -F pcap IN OUT' or 'tcpdump -r IN -w OUT'");
  });

  it('refuses a file shorter than the header and a foreign magic, naming the file', () => {
    expect(() => parsePcap(new Uint8Array(10), 'x')).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_PCAP', message: 'x: not a pcap file (only 10 bytes)' }));
    expect(() => parsePcap(new Uint8Array(Buffer.from('GIF89a' + ' '.repeat(30))), 'y')).toThrow('y: not a pcap file (magic 0x47494638)');
  });

  it('refuses a link type it cannot take IP packets from, listing those it can', () => {
    expect(() => parsePcap(pcapFile(105, []), 'wifi')).toThrow('wifi: link type 105 is not supported (supported: 101, 228, 229, 1, 113, 276)');
  });

  it('ignores the FCS bits above the link type (the upper 4 bits of the field)', () => {
    expect(parsePcap(pcapFile(0x10000000 | LINKTYPE_ETHERNET, [])).linkType).toBe(LINKTYPE_ETHERNET);
  });

  it('an empty capture has no records and no error', () => {
    expect(parsePcap(pcapFile(LINKTYPE_RAW, []))).toEqual({ linkType: LINKTYPE_RAW, records: [], error: null });
  });
});

describe('link types', () => {
  it('RAW, IPv4 and IPv6 take the frame as the packet when its version is 4 or 6', () => {
    for (const lt of [LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6]) {
      expect(ips(pcapFile(lt, [{ data: IPV4 }, { data: IPV6 }, { data: Uint8Array.from([0x50, 1, 2]) }, { data: new Uint8Array(0) }])))
        .toEqual([[...IPV4], [...IPV6], null, null]);
    }
  });

  it('Ethernet: IPv4 and IPv6 by ethertype, through 802.1Q and 802.1ad tags; ARP and cut headers are not IP', () => {
    const data = pcapFile(LINKTYPE_ETHERNET, [
      { data: ethernet(0x0800, IPV4) },
      { data: ethernet(0x86dd, IPV6) },
      { data: ethernet(0x0800, IPV4, [0x8100]) },
      { data: ethernet(0x86dd, IPV6, [0x88a8, 0x8100]) },
      { data: ethernet(0x0806, new Uint8Array(28)) },
      { data: new Uint8Array(13) },
      { data: Uint8Array.from([...new Uint8Array(12), 0x81, 0x00, 0, 100]) },
    ]);
    expect(ips(data)).toEqual([[...IPV4], [...IPV6], [...IPV4], [...IPV6], null, null, null]);
  });

  it('Linux cooked v1 and v2: the protocol field, and frames too short for their header', () => {
    expect(ips(pcapFile(LINKTYPE_LINUX_SLL, [{ data: sll(0x0800, IPV4) }, { data: sll(0x86dd, IPV6) }, { data: sll(0x0806, IPV4) }, { data: new Uint8Array(15) }])))
      .toEqual([[...IPV4], [...IPV6], null, null]);
    expect(ips(pcapFile(LINKTYPE_LINUX_SLL2, [{ data: sll2(0x0800, IPV4) }, { data: sll2(0x86dd, IPV6) }, { data: sll2(0x0806, IPV4) }, { data: new Uint8Array(19) }])))
      .toEqual([[...IPV4], [...IPV6], null, null]);
  });

  it('keeps record numbers across frames that are not IP', () => {
    const p = parsePcap(pcapFile(LINKTYPE_ETHERNET, [{ data: ethernet(0x0806, IPV4) }, { data: ethernet(0x0800, IPV4) }]));
    expect(p.records.map((r) => [r.index, r.ip === null])).toEqual([[0, true], [1, false]]);
  });
});

describe('defects in the records', () => {
  const three = pcapFile(LINKTYPE_RAW, [{ data: IPV4 }, { data: IPV6 }, { data: IPV4 }]);
  const second = 24 + 16 + IPV4.length;

  it('a header cut short: the records before it, and an error saying where', () => {
    const p = parsePcap(three.subarray(0, second + 10), 'cut');
    expect(p.records).toHaveLength(1);
    expect(p.error).toMatchObject({
      code: 'NFQLB_ERR_PCAP',
      message: `cut: record 1 is cut short: its header needs 16 bytes at byte ${second}, the file ends after 10; the 1 records before it were read`,
    });
  });

  it('data cut short: the records before it, and an error saying where', () => {
    const p = parsePcap(three.subarray(0, second + 16 + 5), 'cut');
    expect(p.records.map((r) => r.index)).toEqual([0]);
    expect(p.error?.message).toBe(`cut: record 1 is cut short: it claims 40 bytes at byte ${second + 16}, the file ends after 5; the 1 records before it were read`);
  });

  it('a record length beyond any capture tool (2 GB) stops the reading without allocating it', () => {
    const huge = concat(pcapFile(LINKTYPE_RAW, [{ data: IPV4 }]), pcapFile(LINKTYPE_RAW, [{ data: IPV4, capLen: 0x80000000 }]).subarray(24));
    const p = parsePcap(huge, 'huge');
    expect(p.records).toHaveLength(1);
    expect(p.error?.message).toBe(`huge: record 1 at byte ${second} claims 2147483648 bytes, more than a pcap record holds (${MAX_RECORD_LEN}): the file is corrupt; the 1 records before it were read`);
  });

  it('MAX_RECORD_LEN itself is a record like any other; one byte more is corrupt', () => {
    const frame = new Uint8Array(MAX_RECORD_LEN);
    frame[0] = 0x45;
    expect(parsePcap(pcapFile(LINKTYPE_RAW, [{ data: frame }]))).toMatchObject({ records: [{ index: 0 }], error: null });
    const over = pcapFile(LINKTYPE_RAW, [{ data: concat(frame, new Uint8Array(1)) }]);
    expect(parsePcap(over).error?.message).toMatch(/claims 262145 bytes, more than a pcap record holds/);
  });

  it('the packets are views into the file, not copies', () => {
    const p = parsePcap(three);
    expect(p.records[0].ip!.buffer).toBe(three.buffer);
  });
});

describe('writePcap and readPcap', () => {
  it('round-trip RAW packets with their times', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlbts-${process.pid}-pcap-`));
    try {
      const file = path.join(dir, 'x.pcap');
      fs.writeFileSync(file, writePcap([{ ip: IPV4, timeMs: 1500.25 }, { ip: IPV6 }]));
      const p = readPcap(file);
      expect(p.linkType).toBe(LINKTYPE_RAW);
      expect(p.records.map((r) => [r.index, r.timeMs, r.origLen, [...r.ip!]])).toEqual([[0, 1500.25, 20, [...IPV4]], [1, 0, 40, [...IPV6]]]);
      expect(p.error).toBeNull();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file that cannot be read is one NFQLB_ERR_PCAP line with the errno name', () => {
    expect(() => readPcap('/nonexistent/nfqlbts.pcap')).toThrow(expect.objectContaining({
      code: 'NFQLB_ERR_PCAP', message: expect.stringMatching(/^cannot read \/nonexistent\/nfqlbts\.pcap: ENOENT/),
    }));
  });
});
