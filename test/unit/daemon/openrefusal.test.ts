/** Refused opens told from plain failures, also when wrapped. */
import { NfqlbError } from '../../../src/base/errors';
import { openRefusal } from '../../../src/daemon/openrefusal';

describe('openRefusal', () => {
  it('names a not-a-file and a foreign owner, directly or as a cause; anything else is null', () => {
    const notFile = new NfqlbError('x is a directory, not a regular file', 'NFQLB_ERR_NOT_FILE');
    expect(openRefusal(notFile)).toBe('not_file');
    expect(openRefusal(new NfqlbError('belongs to uid 7', 'NFQLB_ERR_SHM_OWNER'))).toBe('not_owner');
    expect(openRefusal(new NfqlbError('cannot write', 'NFQLB_ERR_FLOWS_FILE_WRITE', { cause: notFile }))).toBe('not_file');
    expect(openRefusal(new Error('outer', { cause: new Error('inner') }))).toBeNull();
    expect(openRefusal(new NfqlbError('missing', 'NFQLB_ERR_SHM_MISSING'))).toBeNull();
    expect(openRefusal('not an error')).toBeNull();
  });
});
