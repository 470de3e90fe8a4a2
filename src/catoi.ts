/**
 * C's atoi() as glibc implements it ((int) strtol(s, NULL, 10)): leading white
 * space, an optional sign, decimal digits up to the first non-digit; 0 when
 * there are none; strtol saturates at LONG_MIN/LONG_MAX and the cast to int
 * keeps the low 32 bits. nfqlb reads every number this way ("12abc" is 12,
 * "x" is 0), so commands and the control server parse numbers with this.
 */
export function atoi(text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)([0-9]+)/.exec(text);
  if (m === null) return 0;
  let v = BigInt(m[2]);
  if (m[1] === '-') v = -v;
  const LONG_MAX = (1n << 63n) - 1n;
  const LONG_MIN = -(1n << 63n);
  if (v > LONG_MAX) v = LONG_MAX;
  if (v < LONG_MIN) v = LONG_MIN;
  return Number(BigInt.asIntN(32, v));
}
