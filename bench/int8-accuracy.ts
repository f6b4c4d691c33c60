// How far int8 weights move the logits, against the reference backend on the stored weights.
//   npx tsx bench/int8-accuracy.ts [MODEL_DIR ...] [--decode K]
// Without folders: every PyTorch fixture in test/fixtures. For each model: the largest
// |logit(int8) − logit(reference)| as a share of that row's largest |logit| over the prompt and K
// greedy steps (each backend decodes its own greedy tokens), the top-1 agreement on the prompt
// rows, and how many of the K greedy tokens are the same.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { dumpModel } from '../src/cli/dump.ts';
import { loadModel } from '../src/load-model.ts';
import { fixtureNames, fixturesDir } from '../test/helpers/fixtures.ts';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { decode: { type: 'string', default: '8' } } });
const decode = Number(values.decode);
const dirs = positionals.length > 0 ? positionals : fixtureNames.map((name) => join(fixturesDir, name));
const argmax = (row: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
};

for (const dir of dirs) {
  let ids: number[];
  try {
    ids = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')).prompt_ids;
  } catch {
    ids = [9707, 11, 1879, 13, 576, 374, 264, 1273]; // "Hello, world. ..." in the Qwen vocabulary
  }
  const reference = await loadModel(dir, { backend: 'reference' });
  const int8 = await loadModel(dir, { backend: 'wasm', weights: 'int8' });
  const a = dumpModel(reference, dir, ids, decode, false);
  const b = dumpModel(int8, dir, ids, decode, false);
  int8.dispose();
  let worst = 0;
  let top1 = 0;
  a.prefill_logits.forEach((row, r) => {
    const other = b.prefill_logits[r];
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < row.length; i++) {
      scale = Math.max(scale, Math.abs(row[i]));
      diff = Math.max(diff, Math.abs(row[i] - other[i]));
    }
    worst = Math.max(worst, diff / scale);
    if (argmax(row) === argmax(other)) top1++;
  });
  const sameGreedy = a.decode_ids.filter((id, k) => id === b.decode_ids[k]).length;
  console.log(
    `${dir}: worst |Δlogit| ${(100 * worst).toFixed(2)} % of the row max, top-1 ${top1}/${ids.length} prompt rows, greedy ${sameGreedy}/${decode} tokens the same`,
  );
}
