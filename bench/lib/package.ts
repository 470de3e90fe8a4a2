/**
 * The repository's package.json, imported (not read at run time) so that tsc
 * copies it into bench/dist/: the compiled copy of src/ there
 * (bench/dist/src/) finds it two levels up, where src/base/version.ts looks
 * for it (from dist/base/ it is the repository's own).
 */
import packageJson from '../../package.json';

export const PACKAGE_VERSION: string = packageJson.version;
