/// <reference types="vitest/config" />
// No React plugin: esbuild compiles JSX with the automatic runtime; nothing is fetched at run
// time (every dependency is bundled into dist/, served by relais from `web_dir`).
import { defineConfig } from 'vite';

export default defineConfig({
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2020',
  },
  server: {
    // `npm run dev` next to a relais on :3000: same-origin calls go through the proxy.
    proxy: {
      '/api': 'http://127.0.0.1:3000',
      '/socket.io': { target: 'http://127.0.0.1:3000', ws: true },
    },
  },
  test: {
    environment: 'jsdom',
    globals: true,
    include: ['src/**/*.test.{ts,tsx}'],
    setupFiles: ['src/test/setup.ts'],
    testTimeout: 10000,
    restoreMocks: true,
  },
});
