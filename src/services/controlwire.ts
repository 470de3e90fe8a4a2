/**
 * The client's side of the control protocol (control.ts has the whole of
 * it): the default address and a request's bytes. Apart from control.ts so
 * that a command line sending one request loads neither node:net nor the
 * server.
 */
import { FLOW_FIELDS, type FlowFieldTexts } from '../flows/fields';

export const DEFAULT_FLOW_ADDRESS = 'unix:nfqlb';

/** The keys nfqlb's readFlowCmd knows (`action` and the flow fields); anything else in a request is ignored. */
export interface ControlRequest extends FlowFieldTexts {
  action?: string;
}
/** In nfqlb's order, which is also the order encodeRequest() writes them in. */
export const KNOWN_KEYS = new Set<string>(['action', ...FLOW_FIELDS]);

/** The flow server address from NFQLB_FLOW_ADDRESS, as nfqlb reads it. */
export function flowAddress(): string {
  return process.env.NFQLB_FLOW_ADDRESS ?? DEFAULT_FLOW_ADDRESS;
}

/**
 * Serialises a request in the order nfqlb's CLI writes it (as text; the CLI
 * sends it as UTF-8).
 */
export function encodeRequest(req: ControlRequest): string {
  let text = '';
  for (const key of KNOWN_KEYS) {
    const value = req[key as keyof ControlRequest];
    if (value !== undefined) text += `${key}:${value}\n`;
  }
  return `${text}eoc:\n`;
}
