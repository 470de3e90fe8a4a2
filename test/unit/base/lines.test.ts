/** countLines: whole lines of a text, as the trace channels count them. */
import { countLines } from '../../../src/base/lines';

it('counts newlines: whole lines, a last line without one does not count', () => {
  expect(countLines('')).toBe(0);
  expect(countLines('no newline')).toBe(0);
  expect(countLines('one\n')).toBe(1);
  expect(countLines('\n\n')).toBe(2);
  expect(countLines('a\nb\nrest')).toBe(2);
});
