// Command-line parsing shared by every `parscale` command: Node's own util.parseArgs, with its
// errors turned into one-line usage errors (exit code 2) instead of stack traces.
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in how the command was called: printed as one line, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export function parseCommandLine<T extends OptionSpec>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (error) {
    // parseArgs messages are already specific ("Unknown option '--foo'..."); keep the first line.
    throw new UsageError(String((error as Error).message).split('\n')[0]);
  }
}

/** Parse a number option, with its allowed range stated in the error. */
export function numberOption(
  name: string,
  value: string | undefined,
  fallback: number,
  check: { integer?: boolean; min?: number; max?: number; minExclusive?: boolean } = {},
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  const { integer = false, min = -Infinity, max = Infinity, minExclusive = false } = check;
  const belowMin = minExclusive ? n <= min : n < min;
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || belowMin || n > max) {
    const range = [
      integer ? 'an integer' : 'a number',
      min !== -Infinity ? `${minExclusive ? '>' : '≥'} ${min}` : '',
      max !== Infinity ? `≤ ${max}` : '',
    ]
      .filter(Boolean)
      .join(' ');
    throw new UsageError(`--${name} must be ${range}, got "${value}"`);
  }
  return n;
}

/** "1,2,3" → [1, 2, 3] */
export function idListOption(name: string, value: string | undefined): number[] {
  if (value === undefined || value.trim() === '') throw new UsageError(`--${name} is required (comma-separated token ids, e.g. 1,2,3)`);
  return value.split(',').map((part) => {
    const id = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(id) || id < 0) {
      throw new UsageError(`--${name}: "${part}" is not a token id (a non-negative integer)`);
    }
    return id;
  });
}

export function requiredOption(name: string, value: string | undefined): string {
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return value;
}
