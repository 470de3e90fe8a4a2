/** What a daemon is started with (the flowlb/lb command line, parsed). */
import type { ConnTrackOptions } from '../datapath/conntrack';
import type { PipelineOptions } from '../datapath/pipeline';
import type { ServedTable } from '../tables/servedtable';

export interface DaemonOptions {
  mode: 'flowlb' | 'lb';
  queues: number[];
  qlength: number;
  /** Copy range, bytes (nfqlb's --mtu). */
  mtu: number;
  batchSize: number;
  failOpen: boolean;
  rcvbuf?: number;
  promiscuousPing: boolean;
  pipeline: Partial<PipelineOptions<ServedTable>>;
  /** --conntrack (off when absent): the connection table's entries in all and idle times. */
  conntrack?: ConnTrackOptions;
  /** lb: the one table. */
  tshm?: string;
  /** --lbshm: the LB-tier table for fragments. */
  lbshm?: string;
  flowAddress: string;
  traceAddress: string;
  /** HOST:PORT of the Prometheus endpoint, or null for none. */
  metricsAddress: string | null;
  /** Milliseconds between checks for re-created tables (default TABLE_CHECK_INTERVAL_MS of tables.ts; 0: never). */
  tableCheckMs?: number;
  /** --flows_file: where flows and trace-flows are kept across restarts (undefined: nowhere, as nfqlb). */
  flowsFile?: string;
  /** The journal is compacted once its records pass this many bytes (and COMPACT_FACTOR × the snapshot); tests make it small. */
  flowsFileCompactBytes?: number;
  /**
   * --tun: the existing tun device kept out-of-order fragments are re-injected
   * through (pipeline.fragmentStoreSlots > 0 keeps them). Opened once by
   * start(); its fd (`tunFd`) is what every batch handler writes with.
   */
  tun?: string;
  /** --ft_shm: the shm the fragment statistics are written to, in nfqlb's layout (undefined: none). */
  ftShm?: string;
  /**
   * Packet threads (the CLI's --workers maps onto this, see workerCount()).
   * 0 (or left out): every queue on this event loop, as before threads
   * existed. N ≥ 1: min(N, queues) threads, the queues split round robin.
   */
  workers?: number;
}
