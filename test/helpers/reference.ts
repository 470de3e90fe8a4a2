/**
 * Access to the nfqlb reference captures (test/fixtures/reference, see its
 * README.md). NFQLB_REFERENCE_DIR points the tests at another copy.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The reference directory: $NFQLB_REFERENCE_DIR, else test/fixtures/reference. */
export function referenceDir(): string {
  return process.env.NFQLB_REFERENCE_DIR ?? path.join(__dirname, '..', 'fixtures', 'reference');
}

/** A path inside the reference directory. */
export function referencePath(...parts: string[]): string {
  return path.join(referenceDir(), ...parts);
}

/**
 * Parses a JSON-lines file (one JSON value per non-blank line). A relative
 * path is taken inside the reference directory. Throws with the line number
 * on a malformed line.
 */
export function readJsonl<T = Record<string, unknown>>(file: string): T[] {
  const full = path.isAbsolute(file) ? file : referencePath(file);
  const out: T[] = [];
  const lines = fs.readFileSync(full, 'utf8').split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === '') continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch (e) {
      throw new Error(`${full}:${n + 1}: ${(e as Error).message}`);
    }
  }
  return out;
}

/** Bytes from a hex string ("4500..."). */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) throw new Error(`bad hex: ${hex.slice(0, 40)}`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

/** Lower-case hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
