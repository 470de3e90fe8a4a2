/** Lines of text, counted as the trace channels count what they drop or carry. */

/** The number of '\n' in `text`: its whole lines. */
export function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}
