/**
 * The one rule for what a flow change does and when it is refused: the
 * daemon's control server (daemon.ts controlReply) and the --flows_file
 * loader (flowsfile.ts, which replays a file into scratch sets before the
 * daemon takes anything from it) both call applyFlowChange, so a file the
 * daemon wrote can only hold changes a start accepts — the two cannot drift.
 *
 * On top of FlowSet's own checks (nfqlb's flowDefine/cmd_set), two names are
 * refused here, where nfqlb takes them and then misbehaves:
 *  - the empty name (`name:` with no value, `flow-set --name=`): nfqlb sets
 *    and lists a flow `""`; here it is "No name" (set) / "FAIL: no name"
 *    (trace-set), nfqlb's own words for a missing name (compileFlow refuses
 *    it, see parse.ts checkFlowName);
 *  - a name starting with '#' for set and delete: those are the hidden flows
 *    udpencap makes (`#name`). nfqlb lets a client set one over a hidden flow
 *    (a later delete of the parent then removes the client's flow) or delete
 *    a hidden one (the parent's UDP encapsulation silently stops).
 */
import type { FlowCmd } from './fields';
import type { FlowSet, TargetSource } from './flowset';

/** The control actions that change a set (and are kept in --flows_file). */
export type FlowChangeAction = 'set' | 'delete' | 'trace-set' | 'trace-delete';

/** The reply to set or delete of a '#' name. */
export const HIDDEN_NAME_REFUSAL = "FAIL: names starting with '#' are the daemon's hidden udpencap flows; use another name";

export function isFlowChangeAction(action: string | undefined): action is FlowChangeAction {
  return action === 'set' || action === 'delete' || action === 'trace-set' || action === 'trace-delete';
}

/**
 * Applies one change to `flows` (set, delete; targets acquired and released
 * through `targets`) or `traceFlows` (trace-set, trace-delete). Returns
 * "OK", or the refusal text with both sets unchanged.
 */
export function applyFlowChange<T>(flows: FlowSet<T>, traceFlows: FlowSet<string>, targets: TargetSource<T>, action: FlowChangeAction, cmd: FlowCmd): string {
  const name = cmd.name;
  switch (action) {
    case 'set':
      if (name !== undefined && name.startsWith('#')) return HIDDEN_NAME_REFUSAL;
      return flows.applySet(cmd, targets);
    case 'delete':
      if (name !== undefined && name.startsWith('#')) return HIDDEN_NAME_REFUSAL;
      return flows.applyDelete(name, targets);
    case 'trace-set': {
      // nfqlb replies nothing on success (its CLI then exits 255) and
      // crashes without a name; here: OK, and FAIL: no name.
      if (name === undefined || name === '') return 'FAIL: no name';
      return traceFlows.define({ ...cmd, name, target: name, udpencap: 0 }) ?? 'OK';
    }
    case 'trace-delete':
      if (name === undefined) return 'FAIL: no name';
      traceFlows.delete(name);
      return 'OK';
  }
}
