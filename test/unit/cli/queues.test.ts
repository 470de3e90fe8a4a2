import { parseQueues } from '../../../src/cli/queues';

describe('--queue', () => {
  it('takes N or A:B up to 65535, and refuses anything else in nfqlb\'s words', () => {
    expect(parseQueues('2')).toEqual([2]);
    expect(parseQueues('0:3')).toEqual([0, 1, 2, 3]);
    expect(parseQueues('65535')).toEqual([65535]);
    for (const bad of ['', '3:1', '65536', '0:65536', '-1', '1:', 'a', '1:2:3', ' 1']) {
      expect(() => parseQueues(bad)).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_USAGE', message: `queue invalid [${bad}]` }));
    }
  });
});
