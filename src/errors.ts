/**
 * The one error class of nfqlb-ts. Every failure carries a stable `code`
 * (NFQLB_ERR_*), and failures from system calls keep the errno name, so callers
 * branch on codes and users read messages that say what to do.
 * Library code throws these; only the CLI layer turns them into exit codes.
 */
export class NfqlbError extends Error {
  readonly code: string;
  readonly errno: string | undefined;

  constructor(message: string, code: string, errno?: string) {
    super(message);
    this.name = 'NfqlbError';
    this.code = code;
    this.errno = errno;
  }
}

/**
 * A mistake in what the user asked for (bad option, missing table). The CLI
 * prints only `message`, exactly as nfqlb words it, and exits with `exitCode`.
 */
export class UsageError extends NfqlbError {
  readonly exitCode: number;
  /** Text for stdout printed before the error (nfqlb prints some notices first). */
  constructor(message: string, exitCode = 1, code = 'NFQLB_ERR_USAGE') {
    super(message, code);
    this.name = 'UsageError';
    this.exitCode = exitCode;
  }
}
