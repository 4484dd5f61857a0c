#!/usr/bin/env node
// respawn-js build <game.js|game.ts> -o <out.wasm>: bundles a game module
// with the SDK (esbuild, which also strips TypeScript) and turns it into a
// component of Respawn's `room` world (componentize-js). Sign the result
// with `respawn sign` like any other guest.
// respawn-js test <test files...>: bundles each test for Node (so
// TypeScript tests run too) and runs them with `node --test`.
// respawn-js typecheck: the project's tsconfig.json through the SDK's tsc.

import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync, realpathSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const sdk = dirname(dirname(fileURLToPath(import.meta.url)));

/** A build tool of the SDK's, or a clear word on how to install it. */
async function tool(name) {
  try {
    return await import(name);
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    console.error(`respawn-js: ${name} is not installed in the SDK (${sdk}).`);
    console.error('Run `just js-sdk` in your Respawn checkout (or `npm ci` in that folder) once.');
    process.exit(1);
  }
}

function usage(why) {
  if (why) console.error(`respawn-js: ${why}`);
  console.error('usage: respawn-js build <game.js|game.ts> -o <out.wasm> [--wit <dir>]');
  console.error('       respawn-js test <test files...>');
  console.error('       respawn-js typecheck');
  process.exit(2);
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'test') await test(rest);
else if (command === 'typecheck') typecheck();
else if (command !== 'build') usage(command ? `unknown command ${command}` : undefined);

async function test(files) {
  if (files.length === 0) usage('name the test files');
  const work = await mkdtemp(join(tmpdir(), 'respawn-js-test-'));
  try {
    const bundles = [];
    for (const [i, file] of files.entries()) {
      const out = join(work, `${i}-${file.replace(/[^A-Za-z0-9.]+/g, '_')}.mjs`);
      const { build } = await tool('esbuild');
      await build({ entryPoints: [file], bundle: true, format: 'esm', platform: 'node', target: 'node20', outfile: out, logLevel: 'warning' });
      bundles.push(out);
    }
    const run = spawnSync(process.execPath, ['--test', ...bundles], { stdio: 'inherit' });
    process.exitCode = run.status ?? 1;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  process.exit();
}

function typecheck() {
  let tsc;
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  } catch {
    console.error(`respawn-js: typescript is not installed in the SDK (${sdk}): run \`just js-sdk\` in your Respawn checkout once.`);
    process.exit(1);
  }
  const run = spawnSync(process.execPath, [tsc, '--noEmit', '-p', '.'], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}
let entry, out, wit = join(sdk, 'wit');
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === '-o') out = rest[++i];
  else if (rest[i] === '--wit') wit = rest[++i];
  else if (!entry) entry = rest[i];
  else usage(`unexpected argument ${rest[i]}`);
}
if (!entry || !out) usage('a game module and -o are required');
if (!existsSync(entry)) usage(`${entry} does not exist`);

const work = await mkdtemp(join(tmpdir(), 'respawn-js-'));
try {
  const started = Date.now();
  const main = join(work, 'main.js');
  await writeFile(
    main,
    `import Game from ${JSON.stringify(resolve(entry))};\n` +
      `import { bind } from ${JSON.stringify(join(sdk, 'src/component.js'))};\n` +
      `export const game = bind(Game);\n`,
  );
  const bundle = join(work, 'bundle.js');
  const { build } = await tool('esbuild');
  const { componentize } = await tool('@bytecodealliance/componentize-js');
  await build({
    entryPoints: [main],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    outfile: bundle,
    external: ['respawn:game/*'],
    // The SDK that runs this build is the one bundled, whatever copy the
    // game's own node_modules holds (it needs one only for its tests).
    alias: { '@respawn/guest-sdk': join(sdk, 'src/index.js') },
    logLevel: 'warning',
  });
  // Games see no network: `http` and `fetch-event` would import
  // wasi:http, which the host refuses (`wrong_world`). stdio, random and
  // clocks stay: the host's WASI random is the room's seeded stream and
  // its clocks are the room clock, so `Math.random()` and `Date.now()`
  // replay exactly.
  const { component } = await componentize({
    sourcePath: bundle,
    // The splicer's WASI file system does not follow symlinks.
    witPath: realpathSync(wit),
    worldName: 'room',
    disableFeatures: ['http', 'fetch-event'],
  });
  // Whole or not at all: a build cut short must not leave a newer,
  // broken file that looks up to date.
  await writeFile(`${out}.part`, component);
  await rename(`${out}.part`, out);
  console.log(`${out}: ${(component.length / 1048576).toFixed(1)} MiB component in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} finally {
  await rm(work, { recursive: true, force: true });
}
