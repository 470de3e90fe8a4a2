/**
 * `nfqlb replay`: runs captured packets through the decision pipeline the
 * daemon runs, offline, and prints one JSON line per packet saying what the
 * load balancer would do with it.
 */
import { atoi } from '../../base/catoi';
import { loadConfig, type ReplayConfig } from '../../replay/config';
import { UsageError } from '../../base/errors';
import type { MaglevTable } from '../../tables/maglev';
import { Pipeline, type PipelineOptions } from '../../datapath/pipeline';
import { readPcap } from '../../replay/pcap';
import { Target } from '../../tables/targets';
import type { Options, NfqlbCommand, ParsedArgs } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** Options the daemon line of a config may set, overridden by replay's own. */
function pipelineOptions(daemonArgs: ParsedArgs | undefined, args: ParsedArgs): Partial<PipelineOptions<MaglevTable>> {
  const pick = (name: string, dflt: string): number => {
    const v = args[name] ?? daemonArgs?.[name];
    return atoi(v === undefined ? dflt : String(v));
  };
  return {
    hashMode: pick('hash_mode', '1') === 0 ? 0 : 1,
    notargetsFwmark: pick('notargets_fwmark', '-1'),
    nolbFwmark: pick('nolb_fwmark', '-1'),
    fragmentCapacity: Math.max(1, pick('ft_size', '500') + pick('ft_buckets', '500')),
    fragmentHashSize: Math.max(1, pick('ft_size', '500')),
    fragmentTtlMs: Math.max(1, pick('ft_ttl', '200')),
  };
}

export interface Setup {
  pipeline: Pipeline<MaglevTable>;
  close(): void;
}

/** --lbshm for the pipeline: the tier table and its own fwmark, read live as the daemon reads them. */
function lbTier(table: MaglevTable): PipelineOptions<MaglevTable>['lbTier'] {
  return {
    table,
    get ownFwmark() {
      return table.ownFwmark;
    },
  };
}

/** Opens `name` from `open`, or fails with nfqlb's line for a table that is not there. */
function tierTable(name: string, open: (n: string) => MaglevTable): MaglevTable {
  try {
    return open(name);
  } catch (err) {
    throw new UsageError(`FAILED mapSharedData: ${name} (${(err as Error).message})`, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
}

/** The pipeline a config describes, as replay runs it (also used by the hot-path allocation test). */
export function fromConfig(config: ReplayConfig, args: ParsedArgs): Setup {
  const daemon = config.daemon;
  const opts = pipelineOptions(daemon?.args, args);
  const lbshm = args.lbshm ?? daemon?.args.lbshm;
  if (lbshm !== undefined) opts.lbTier = lbTier(tierTable(String(lbshm), (n) => config.store.open(n)));
  if (daemon?.command === 'lb') {
    const name = String(daemon.args.tshm ?? 'nfqlb');
    const target = new Target(name, config.store.open(name));
    const pipeline = new Pipeline<MaglevTable>(null, { ...opts, fixedTarget: target, sctpEncap: atoi(String(daemon.args.sctp_encap ?? '0')) & 0xffff });
    return { pipeline, close: () => undefined };
  }
  config.flows.promiscuousPing = args.promiscuous_ping === true || daemon?.args.promiscuous_ping === true;
  return { pipeline: new Pipeline(config.flows, opts), close: () => undefined };
}

function fromLiveTable(name: string, args: ParsedArgs, store: { open(n: string, w: boolean): MaglevTable; close(t: MaglevTable): void }): Setup {
  const table = store.open(name, false);
  let tier: MaglevTable | null = null;
  if (args.lbshm !== undefined) {
    try {
      tier = tierTable(String(args.lbshm), (n) => store.open(n, false));
    } catch (err) {
      store.close(table);
      throw err;
    }
  }
  const opts = { ...pipelineOptions(undefined, args), fixedTarget: new Target(name, table), lbTier: tier === null ? null : lbTier(tier) };
  const pipeline = new Pipeline<MaglevTable>(null, opts);
  return {
    pipeline,
    close: () => {
      store.close(table);
      if (tier !== null) store.close(tier);
    },
  };
}

export const replayCommands: NfqlbCommand[] = [
  {
    name: 'replay',
    describe: 'Run captured packets through the load-balancing decisions offline; one JSON line per packet',
    options: {
      pcap: str('pcap file (RAW, Ethernet or Linux cooked link type)', { demandOption: true, values: 'file' }),
      config: str('File of nfqlb command lines (init, activate, deactivate, delete, flow-set, flow-delete, flowlb)', { values: 'file' }),
      tshm: str('Use this live table (no flows), like nfqlb lb', { values: 'shm' }),
      lbshm: str("LB-tier table, like nfqlb's --lbshm: with --config one its lines make, with --tshm a live one", { values: 'shm' }),
      hash_mode: str('0: hash the whole key; 1: SCTP hashes ports only (default 1)', { defaultDescription: '1', values: { words: ['0', '1'] } }),
      promiscuous_ping: { type: 'boolean', describe: 'Accept ping on any flow with an address match' },
      notargets_fwmark: str('fwmark when the table has no targets (default -1: drop)', { defaultDescription: '-1' }),
      nolb_fwmark: str('fwmark when no flow matches (default -1: drop)', { defaultDescription: '-1' }),
    },
    run(args, { store, out, parser }) {
      const hasConfig = args.config !== undefined;
      const hasTshm = args.tshm !== undefined;
      if (hasConfig === hasTshm) throw new UsageError('replay needs exactly one of --config=FILE or --tshm=NAME');
      const pcap = readPcap(String(args.pcap));
      let setup: Setup;
      if (hasConfig) {
        setup = fromConfig(loadConfig(String(args.config), parser), args);
      } else {
        try {
          setup = fromLiveTable(String(args.tshm), args, store);
        } catch (err) {
          throw new UsageError(`FAILED mapSharedData: ${String(args.tshm)} (${(err as Error).message})`, 1, 'NFQLB_ERR_USAGE', { cause: err });
        }
      }
      const { pipeline } = setup;
      const last = pipeline.last;
      let chunk = '';
      try {
        for (const rec of pcap.records) {
          if (rec.ip === null) continue;
          const fw = pipeline.decide(rec.ip, 0, rec.ip.length, rec.timeMs);
          const target = last.target === null ? 'null' : JSON.stringify(last.target.name);
          const flow = last.flow === null ? 'null' : JSON.stringify(last.flow.name);
          const hash = last.hash < 0 ? 'null' : String(last.hash);
          chunk +=
            fw >= 0
              ? `{"i":${rec.index},"verdict":"accept","fwmark":${fw},"target":${target},"flow":${flow},"hash":${hash}}\n`
              : `{"i":${rec.index},"verdict":"drop","fwmark":-1,"target":${target},"flow":${flow},"hash":${hash}}\n`;
          if (chunk.length > 1 << 16) {
            out(chunk);
            chunk = '';
          }
        }
        out(chunk);
      } finally {
        setup.close();
      }
      // Every complete record has been printed; a cut or corrupt record ends the run with one line.
      if (pcap.error !== null) throw pcap.error;
    },
  },
];
