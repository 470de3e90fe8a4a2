/**
 * The keys the flow index files a flow under (indexkeys.ts): one per list
 * it belongs to — per protocol class it can match, its port blocks or the
 * class's "any" list; its outermost destination and source CIDRs or their
 * "any" lists — each followed by its hash; made once per flow.
 */
import {
  ANY_DST, ANY_SRC, CLASS_OTHER, flowKeys, KEY_WORDS, protoClass, TAG_ANY, TAG_DST, TAG_MASK, TAG_PORT, TAG_SRC,
} from '../../../src/flows/indexkeys';
import { hashKey5 } from '../../../src/flows/keytable';
import type { Flow } from '../../../src/flows/match';
import { compileFlow, type FlowDefinition } from '../../../src/flows/parse';
import { IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../../src/packet/hashkey';

function flow(def: Omit<FlowDefinition<null>, 'name' | 'target'>): Flow<null> {
  return compileFlow<null>({ name: 'f', target: null, ...def }) as Flow<null>;
}

/** The keys as [tag name, low tag bits, words 1-4], hashes checked on the way. */
function keys(f: Flow<null>): Array<[string, number, number[]]> {
  const k = flowKeys(f);
  expect(k.length % KEY_WORDS).toBe(0);
  const out: Array<[string, number, number[]]> = [];
  for (let at = 0; at < k.length; at += KEY_WORDS) {
    expect(k[at + 5]).toBe(hashKey5(k, at, -1));
    const tag = k[at] & TAG_MASK;
    const name = tag === TAG_ANY ? 'any' : tag === TAG_PORT ? 'port' : tag === TAG_DST ? 'dst' : tag === TAG_SRC ? 'src' : '?';
    out.push([name, k[at] & 0xffffff, Array.from(k.subarray(at + 1, at + 5))]);
  }
  return out;
}

describe('flowKeys', () => {
  test('a flow without parts is in every "any" list: four port classes, dst, src', () => {
    expect(keys(flow({}))).toEqual([
      ['any', 0, [0, 0, 0, 0]], ['any', 1, [0, 0, 0, 0]], ['any', 2, [0, 0, 0, 0]], ['any', CLASS_OTHER, [0, 0, 0, 0]],
      ['any', ANY_DST, [0, 0, 0, 0]], ['any', ANY_SRC, [0, 0, 0, 0]],
    ]);
  });

  test('protocols pick the classes; dports become blocks (class << 8 | level, port >> level)', () => {
    expect(keys(flow({ protocols: 'udp', dports: '80,1024-2047' })).slice(0, 2)).toEqual([
      ['port', (1 << 8) | 0, [80, 0, 0, 0]],
      ['port', (1 << 8) | 10, [1, 0, 0, 0]],
    ]);
    // Too many blocks: the class's "any" list instead.
    const many = Array.from({ length: 40 }, (_, i) => `${2 * i + 1}`).join(',');
    expect(keys(flow({ protocols: 'tcp,sctp', dports: many })).slice(0, 2)).toEqual([['any', 0, [0, 0, 0, 0]], ['any', 2, [0, 0, 0, 0]]]);
  });

  test('CIDRs: the outermost ones, with their length and masked address words', () => {
    const k = keys(flow({ dsts: '192.0.2.77/24,192.0.2.0/25', srcs: '2001:db8::1/32' }));
    expect(k.filter(([n]) => n === 'dst')).toEqual([['dst', 120, [0, 0, 0xffff, (0xc0000200 | 0)]]]);
    expect(k.filter(([n]) => n === 'src')).toEqual([['src', 32, [0x20010db8, 0, 0, 0]]]);
  });

  test('made once per flow (the same array on the next call)', () => {
    const f = flow({ dsts: '192.0.2.0/24' });
    expect(flowKeys(f)).toBe(flowKeys(f));
  });
});

describe('protoClass', () => {
  test('tcp, udp, sctp and the rest', () => {
    expect([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, 0].map(protoClass)).toEqual([0, 1, 2, CLASS_OTHER, CLASS_OTHER]);
  });
});
