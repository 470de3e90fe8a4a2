/** The version string `nfqlb version` prints; the nfqlb release this is compatible with. */
export const NFQLB_COMPAT_VERSION = '1.2.0';

/**
 * package.json's version: two levels up from dist/base/ (the package) and
 * src/base/ (ts-jest), four from a copy of src/ compiled beside the test bed
 * or the bench (testbed/dist/src/base/, bench/dist/src/base/), as the addon
 * is looked for in addon/native.ts.
 */
function packageVersion(): string {
  try {
    return (require('../../package.json') as { version: string }).version;
  } catch {
    return (require('../../../../package.json') as { version: string }).version;
  }
}

export const PACKAGE_VERSION: string = packageVersion();
