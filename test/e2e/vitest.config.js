import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.js'],
    // Reuses a running `cargo xtask dev` stack, or starts one (support/stack.js).
    globalSetup: ['./support/stack.js'],
    // Cold starts of debug builds on small machines: generous, not infinite.
    testTimeout: 240_000,
    hookTimeout: 120_000,
    // One file at a time: every file starts real view processes and a Chromium.
    fileParallelism: false,
    reporters: ['verbose'],
  },
});
