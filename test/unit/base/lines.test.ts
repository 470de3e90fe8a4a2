import { countLines } from '../../../src/base/lines';

describe('countLines', () => {
  it('counts the newlines of a text', () => {
    expect(countLines('')).toBe(0);
    expect(countLines('no end')).toBe(0);
    expect(countLines('a\n')).toBe(1);
    expect(countLines('a\nb\n\nc')).toBe(3);
  });
});
