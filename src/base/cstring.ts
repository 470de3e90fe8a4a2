/**
 * C string emulation for the flow code: nfqlb splits lists with strtok,
 * compares with strcasecmp, measures with strlen and prints JSON with
 * printf, and the texts users see depend on their quirks. Numbers are
 * catoi.ts's business.
 */
import { isUtf8 } from 'node:buffer';

/** strcasecmp needs ASCII-only case folding (toLowerCase would fold non-ASCII too). */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/** Bytes of a string as C's strlen sees it (names and arguments travel as UTF-8). */
export function cStrlen(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Bytes of a value as the daemon holds it: a byte string (one char per byte,
 * what the control server reads as latin1). Text with characters above 0xff
 * (a caller that did not go through the socket) counts as its UTF-8.
 */
export function byteLength(s: string): number {
  return /[^\x00-\xff]/.test(s) ? Buffer.byteLength(s, 'utf8') : s.length;
}

/**
 * A string as a JSON string literal (RFC 8259): `"` and `\` escaped, control
 * characters as \n, \t, ... or \u00XX; everything else as it is, so a byte
 * string of UTF-8 stays those bytes when written back as latin1, and a name
 * of letters, digits, '-', '_', '.' prints exactly as nfqlb prints it. Bytes
 * that are not UTF-8 (possible only from raw clients) become U+FFFD, so the
 * listing always parses.
 */
export function jsonString(s: string): string {
  let v = s;
  if (/[\x80-\xff]/.test(v) && !/[^\x00-\xff]/.test(v)) {
    const bytes = Buffer.from(v, 'latin1');
    if (!isUtf8(bytes)) v = Buffer.from(bytes.toString('utf8'), 'utf8').toString('latin1');
  }
  if (!/["\\\x00-\x1f]/.test(v)) return `"${v}"`;
  return `"${v.replace(/["\\\x00-\x1f]/g, (c) => JSON_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;
}

const JSON_ESCAPES: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * nfqlb's mkargv(): the non-empty tokens of `str` split on any character of
 * `delims` (strtok), or null when there are none — an empty list is the same
 * as an absent one.
 */
export function mkargv(str: string | undefined, delims: string): string[] | null {
  if (str === undefined || str === '') return null;
  const out: string[] = [];
  let tok = '';
  for (let i = 0; i < str.length; i++) {
    const c = str[i];
    if (delims.includes(c)) {
      if (tok !== '') out.push(tok);
      tok = '';
    } else {
      tok += c;
    }
  }
  if (tok !== '') out.push(tok);
  return out.length === 0 ? null : out;
}
