/** Lines of trace text (each ends in '\n'): what a dropped batch of trace text counts as. */
export function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}
