// Starting headless Chromium for the browser suites (not a test file itself: `node --test` only
// picks up `*.test.mjs`): Debian's package, driven by playwright-core, which never downloads a
// browser, with the flags the project's rules give and a fresh profile per run.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
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

/** Closes what `launchChromium` started, bounded: a wedged browser must not hold the run open. */
export async function closeChromium(context) {
  if (context) await withTimeout(context.close(), 10_000, 'Chromium to close').catch(() => {});
}

/**
 * One Chromium for the tests of a file: started before them with a fresh profile, closed and its
 * profile removed after them. Returns a function giving the browser's context.
 */
export function chromiumForTests() {
  let context = null;
  let profileDir = null;
  before(async () => {
    profileDir = mkdtempSync(path.join(os.tmpdir(), 'gangway-chromium-'));
    context = await launchChromium(profileDir);
  }, { timeout: 60_000 });
  after(async () => {
    await closeChromium(context);
    if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  }, { timeout: 15_000 });
  return () => context;
}
