// The library example in README.md is run as written, so the front door cannot go stale.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../', import.meta.url));

it('the README library example runs and prints generated text', () => {
  const readme = readFileSync(join(repo, 'README.md'), 'utf8');
  const match = readme.match(/<!-- example: library -->\s*```ts\n([\s\S]*?)```/);
  assert.ok(match, 'README.md has a ```ts block after <!-- example: library -->');
  // inside the repository, `import ... from 'parscale'` resolves to the package itself
  const file = join(repo, `.readme-example-${process.pid}.ts`);
  writeFileSync(file, match[1]);
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', file], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    assert.match(out, /tokens\/s/);
  } finally {
    rmSync(file, { force: true });
  }
});
