/** nfqlb's --queue option. */
import { NfqlbError } from '../base/errors';

/** Parses nfqlb's --queue: "N" or "A:B". Throws NfqlbError with nfqlb's wording. */
export function parseQueues(spec: string): number[] {
  const m = /^(\d+)(?::(\d+))?$/.exec(spec);
  if (m === null) throw new NfqlbError(`queue invalid [${spec}]`, 'NFQLB_ERR_USAGE');
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (first > last || last > 65535) throw new NfqlbError(`queue invalid [${spec}]`, 'NFQLB_ERR_USAGE');
  const queues: number[] = [];
  for (let q = first; q <= last; q++) queues.push(q);
  return queues;
}
