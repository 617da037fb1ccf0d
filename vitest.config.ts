import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    reporters: ['default'],
    // The token cache (src/train/token-cache.ts) stays off in tests, and in the CLIs they spawn
    // (they inherit this environment): no test writes to the developer's ~/.cache. The cache's
    // own tests turn it on with a temporary APEX_CACHE_DIR.
    env: { APEX_TOKEN_CACHE: '0' },
  },
});
