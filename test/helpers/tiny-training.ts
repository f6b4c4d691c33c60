// The tiny training setup the training tests share: a few KB of the corpus in a temporary folder
// (removed after the file's tests) and the options of a 1-layer, hidden-16 model on it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { DEFAULT_OPTIONS, type StepLog, type TrainOptions } from '../../src/training/train.ts';

export interface TinyTraining {
  /** the temporary folder (runs write their outputs below it) */
  work: string;
  trainText: string;
  valText: string;
  /** options of a tiny run on that text; `overrides` win */
  options(overrides?: Partial<TrainOptions>): TrainOptions;
}

export function tinyTraining(prefix: string): TinyTraining {
  const work = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(work, { recursive: true, force: true }));
  const corpus = readFileSync(new URL('../../data/kjv-train.txt', import.meta.url), 'utf8');
  const trainText = join(work, 'train.txt');
  const valText = join(work, 'val.txt');
  writeFileSync(trainText, corpus.slice(0, 6000));
  writeFileSync(valText, corpus.slice(6000, 7500));
  return {
    work,
    trainText,
    valText,
    options: (overrides = {}) => ({
      ...DEFAULT_OPTIONS,
      data: trainText,
      val: valText,
      out: join(work, 'out'),
      layers: 1,
      hidden: 16,
      heads: 2,
      kvHeads: 1,
      intermediate: 24,
      vocabSize: 300,
      context: 12,
      accumulate: 2,
      lr: 1e-2,
      evalWindows: 4,
      saveEvery: 0,
      quiet: true,
      ...overrides,
    }),
  };
}

/** [step, loss, val_loss] of every logged update, for comparing two runs. */
export const losses = (logs: StepLog[]) => logs.map((l) => [l.step, l.loss, l.val_loss ?? null]);
