/** The version string `nfqlb version` prints; the nfqlb release this is compatible with. */
export const NFQLB_COMPAT_VERSION = '1.2.0';
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const PACKAGE_VERSION: string = (require('../../package.json') as { version: string }).version;
