// Regenerates types/ (TypeScript declarations of the WIT world's
// interfaces) with jco's bindgen: `npm run wit-types` after a WIT change.
// (jco's own `guest-types` command cannot read files here: its WASI
// filesystem shim finds none, so the WIT goes in as source text.)

import { $init, generateTypes } from '../node_modules/@bytecodealliance/jco-transpile/vendor/js-component-bindgen-component.js';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [wit, out] = process.argv.slice(2);
await $init;
const files = generateTypes('room', {
  wit: { tag: 'source', val: readFileSync(wit, 'utf8') },
  world: 'room',
  guest: true,
  features: { tag: 'list', val: [] },
  tlaCompat: false,
});
for (const [name, bytes] of files) {
  const path = join(out, name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
  console.log(path);
}
