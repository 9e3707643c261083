// Starting headless Chromium for the browser suites (not a test file itself: `node --test` only
// picks up `*.test.mjs`): Debian's package, driven by playwright-core, which never downloads a
// browser, with the flags the project's rules give and a fresh profile per run.

import { chromium } from 'playwright-core';
import { STEP_MS, withTimeout } from '../node/common.mjs';

/** Debian's Chromium; `CHROMIUM_BIN` overrides it. Nothing here ever downloads a browser. */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/**
 * A persistent context in `profileDir` (fresh: no cache, HSTS or settings leak between runs).
 * `tls` accepts the test's self-signed certificate (`--ignore-certificate-errors`); `extraArgs`
 * are added to the command line.
 */
export async function launchChromium(profileDir, { tls = false, extraArgs = [] } = {}) {
  const context = await withTimeout(
    chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      ignoreHTTPSErrors: tls,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        ...(tls ? ['--ignore-certificate-errors'] : []),
        ...extraArgs,
      ],
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    }),
    40_000,
    `Chromium (${CHROMIUM}) to start`,
  );
  context.setDefaultTimeout(STEP_MS);
  context.setDefaultNavigationTimeout(STEP_MS);
  return context;
}
