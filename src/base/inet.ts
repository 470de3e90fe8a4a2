/**
 * glibc's inet_pton/inet_ntop for IPv6 (with IPv4 inside), because which
 * CIDR texts nfqlb accepts and how its listings and traces print addresses
 * must be nfqlb's, byte for byte. Not for the packet path: inetNtop6 builds
 * a string.
 */

/** inet_pton(AF_INET) of s[start..end) into out[at..at+4): strict dotted quad, no leading zeros. */
function inetPton4(s: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let sawDigit = false;
  let octets = 0;
  let cur = 0;
  const tmp = [0, 0, 0, 0];
  let tp = 0;
  for (let i = start; i < end; i++) {
    const ch = s.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      const nv = cur * 10 + (ch - 48);
      if (sawDigit && cur === 0) return false;
      if (nv > 255) return false;
      cur = nv;
      tmp[tp] = cur;
      if (!sawDigit) {
        if (++octets > 4) return false;
        sawDigit = true;
      }
    } else if (ch === 46 /* . */ && sawDigit) {
      if (octets === 4) return false;
      tp++;
      cur = 0;
      tmp[tp] = 0;
      sawDigit = false;
    } else {
      return false;
    }
  }
  if (octets < 4) return false;
  for (let k = 0; k < 4; k++) out[at + k] = tmp[k];
  return true;
}

function hexValue(ch: number): number {
  if (ch >= 48 && ch <= 57) return ch - 48;
  if (ch >= 97 && ch <= 102) return ch - 87;
  if (ch >= 65 && ch <= 70) return ch - 55;
  return -1;
}

/**
 * glibc's inet_pton(AF_INET6): parses `s` into out[0..16) and returns true,
 * or returns false (out is then unspecified). Accepts a trailing dotted quad,
 * refuses zone ids, empty strings and a "::" that stands for no group.
 */
export function inetPton6(s: string, out: Uint8Array): boolean {
  const n = s.length;
  const tmp = new Uint8Array(16);
  let i = 0;
  if (n === 0) return false;
  if (s.charCodeAt(0) === 58 /* : */) {
    i = 1;
    if (i >= n || s.charCodeAt(i) !== 58) return false;
  }
  let tp = 0;
  let colonp = -1;
  let curtok = i;
  let xdigits = 0;
  let val = 0;
  while (i < n) {
    const ch = s.charCodeAt(i++);
    const d = hexValue(ch);
    if (d >= 0) {
      if (xdigits === 4) return false;
      val = (val << 4) | d;
      xdigits++;
      continue;
    }
    if (ch === 58) {
      curtok = i;
      if (xdigits === 0) {
        if (colonp >= 0) return false;
        colonp = tp;
        continue;
      } else if (i >= n) {
        return false; // a trailing single ':'
      }
      if (tp + 2 > 16) return false;
      tmp[tp++] = (val >> 8) & 0xff;
      tmp[tp++] = val & 0xff;
      xdigits = 0;
      val = 0;
      continue;
    }
    if (ch === 46 && tp + 4 <= 16 && inetPton4(s, curtok, n, tmp, tp)) {
      tp += 4;
      xdigits = 0;
      break; // inet_pton4 consumed the rest of the string
    }
    return false;
  }
  if (xdigits > 0) {
    if (tp + 2 > 16) return false;
    tmp[tp++] = (val >> 8) & 0xff;
    tmp[tp++] = val & 0xff;
  }
  if (colonp >= 0) {
    if (tp === 16) return false;
    const moved = tp - colonp;
    for (let k = 1; k <= moved; k++) {
      tmp[16 - k] = tmp[colonp + moved - k];
      tmp[colonp + moved - k] = 0;
    }
    tp = 16;
  }
  if (tp !== 16) return false;
  out.set(tmp);
  return true;
}

/**
 * glibc's inet_ntop(AF_INET6) of b[off..off+16): the first longest run of two
 * or more zero groups becomes "::", and ::a.b.c.d / ::ffff:a.b.c.d keep the
 * dotted quad (so IPv4 flows list as "::ffff:192.0.2.1"). Not for the packet
 * path (it builds a string).
 */
export function inetNtop6(b: Uint8Array, off = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[off + 2 * i] << 8) | b[off + 2 * i + 1]);
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  let curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase === -1) {
        curBase = i;
        curLen = 1;
      } else {
        curLen++;
      }
    } else if (curBase !== -1) {
      if (bestBase === -1 || curLen > bestLen) {
        bestBase = curBase;
        bestLen = curLen;
      }
      curBase = -1;
    }
  }
  if (curBase !== -1 && (bestBase === -1 || curLen > bestLen)) {
    bestBase = curBase;
    bestLen = curLen;
  }
  if (bestBase !== -1 && bestLen < 2) bestBase = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) s += ':';
      continue;
    }
    if (i !== 0) s += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      s += `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
      return s;
    }
    s += words[i].toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) s += ':';
  return s;
}
