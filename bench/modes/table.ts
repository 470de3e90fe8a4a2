/** --table=RESULT.json: the tables of a comparison already run (no root needed). */
import * as fs from 'node:fs';
import { printCompare, type ReportedCompare, type ReportedImpl, type ReportedPoint } from './compare-report';

export function tableMode(file: string): void {
  const result = JSON.parse(fs.readFileSync(file, 'utf8')) as ReportedCompare & { mode: string; implementations: ReportedImpl[]; points: ReportedPoint[] };
  if (result.mode !== 'compare') throw new Error(`${file} is not a comparison (mode ${result.mode})`);
  printCompare(result, result.implementations, result.points);
}
