/**
 * C's text-to-number functions as glibc implements them, the one place
 * nfqlb's number parsing is emulated: nfqlb reads every number with atoi,
 * strtol or sscanf, and which texts are valid (and what "12abc" means) must
 * be nfqlb's. Everything that parses a number the way nfqlb does uses these.
 */

const LONG_MAX = (1n << 63n) - 1n;
const LONG_MIN = -(1n << 63n);

/**
 * strtol(text, NULL, base) for base 10 or 0 (0: "0x1f" hex, "017" octal,
 * else decimal): leading white space, an optional sign, digits up to the
 * first character that does not fit; 0 when there are none; saturated at
 * LONG_MIN/LONG_MAX like glibc. A bigint: callers cut it to their C type.
 */
export function strtol(text: string, base: 0 | 10): bigint {
  let v: bigint;
  if (base === 10) {
    const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/.exec(text);
    if (m === null) return 0n;
    v = BigInt(m[2]);
    if (m[1] === '-') v = -v;
  } else {
    const m = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))/.exec(text);
    if (m === null) return 0n;
    v = m[2] !== undefined ? BigInt(`0x${m[2]}`) : m[3] !== undefined ? BigInt(`0o${m[3].slice(1) || '0'}`) : BigInt(m[4]);
    if (m[1] === '-') v = -v;
  }
  if (v > LONG_MAX) v = LONG_MAX;
  if (v < LONG_MIN) v = LONG_MIN;
  return v;
}

/**
 * C's atoi() as glibc implements it ((int) strtol(s, NULL, 10)): the cast to
 * int keeps the low 32 bits. nfqlb reads every option number this way
 * ("12abc" is 12, "x" is 0), so commands and the control server parse
 * numbers with this.
 */
export function atoi(text: string): number {
  return Number(BigInt.asIntN(32, strtol(text, 10)));
}

/**
 * The leading unsigned decimal number of `s` as sscanf("%u") reads it
 * (white space, optional '+', digits; trailing characters ignored), or -1.
 * Divergence: sscanf also takes a '-' sign and numbers ≥ 2^32 and wraps them
 * (nfqlb accepts `192.0.2.0/-1` as a /95 and port 4294967297 as 1); here they
 * are invalid. Numbers that do not fit `max` give max + 1.
 */
export function scanUnsigned(s: string, max: number): number {
  const m = /^[ \t\n\v\f\r]*\+?(\d+)/.exec(s);
  if (m === null) return -1;
  const digits = m[1].replace(/^0+(?=\d)/, '');
  if (digits.length > 10) return max + 1;
  const v = Number(digits);
  return v > max ? max + 1 : v;
}
