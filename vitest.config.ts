import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // At least two test files at a time. Vitest's default is one fewer than the CPUs, i.e. one on
    // the 2-core machines this suite targets, where a file that waits on a spawned CLI leaves a
    // core idle: the whole suite took 398 s with one worker and 281–317 s with two on the 2-core
    // VM (2026-11-28). Larger machines keep vitest's default.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    reporters: ['default'],
    // The token cache (src/train/token-cache.ts) stays off in tests, and in the CLIs they spawn
    // (they inherit this environment): no test writes to the developer's ~/.cache. The cache's
    // own tests turn it on with a temporary APEX_CACHE_DIR.
    env: { APEX_TOKEN_CACHE: '0' },
  },
});
