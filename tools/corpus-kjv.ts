// Build the training corpus data/kjv-train.txt and data/kjv-val.txt from Debian's King James
// Version (package bible-kjv-text, read with the `bible` program of package bible-kjv):
//
//   apt-get install bible-kjv bible-kjv-text && npx tsx tools/corpus-kjv.ts
//
// Output format, per chapter: a heading line "Genesis 1", then one verse per line (verse numbers
// dropped), then a blank line. Every 25th chapter (chapters 25, 50, ... in Bible order) goes to
// the validation file, the rest to the training file, so the split is fixed and needs no RNG.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const out = process.argv[2] ?? 'data';
const raw = execFileSync('bible', ['-l', '100000', 'Gen1:1-Rev22:21'], { encoding: 'utf8', maxBuffer: 64 << 20 });

const chapters: string[] = [];
let current: string[] | null = null;
for (const line of raw.split('\n')) {
  if (line.trim() === '') continue;
  const verse = /^\s+(\d+) (.*)$/.exec(line);
  if (verse !== null) {
    if (current === null) throw new Error(`verse before any chapter heading: ${line}`);
    current.push(verse[2].trim());
  } else {
    if (current !== null) chapters.push(current.join('\n') + '\n');
    current = [line.trim()];
  }
}
if (current !== null) chapters.push(current.join('\n') + '\n');

const train: string[] = [];
const val: string[] = [];
chapters.forEach((chapter, i) => ((i + 1) % 25 === 0 ? val : train).push(chapter));
writeFileSync(join(out, 'kjv-train.txt'), train.join('\n'));
writeFileSync(join(out, 'kjv-val.txt'), val.join('\n'));
console.error(`${chapters.length} chapters: ${train.length} train, ${val.length} validation`);
