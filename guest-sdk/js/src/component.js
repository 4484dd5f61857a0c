// The component's side of a JS game: binds the WIT imports to the SDK and
// exports `game`. `respawn-js build` bundles it with the game's module
// (`import Game from <the game>`), so game code never imports WIT.

import * as host from 'respawn:game/host@0.2.0';
import * as kv from 'respawn:game/kv@0.2.0';
import { Runner, Reject, kvError, describe, toUnit } from './index.js';

function storage(call) {
  try {
    return call();
  } catch (e) {
    throw kvError(e);
  }
}

const backend = {
  send: (to, bytes) => host.send(BigInt(to), bytes),
  broadcast: (bytes, except) => host.broadcast(bytes, except === undefined ? undefined : BigInt(except)),
  kick: (player, reason) => host.kick(BigInt(player), reason),
  log: (level, message) => host.log(level, message),
  nowMs: () => Number(host.nowMs()),
  randomU64: () => host.randomU64(),
  setTickInterval: (ms) => host.setTickInterval(ms),
  kvGet: (key) => storage(() => kv.get(key)),
  kvSet: (key, value) => storage(() => kv.set(key, value)),
  kvDelete: (key) => storage(() => kv.delete(key)),
  kvList: (prefix, startAfter, limit) => storage(() => kv.list(prefix, startAfter, limit)),
};

// Math.random() draws from the room's seeded generator, whose position
// every checkpoint records: a restarted or replayed room gets the same
// numbers whatever the engine's own generator held. (Date.now() already
// reads the room clock: the host's WASI clocks are the room's.)
Math.random = () => toUnit(host.randomU64());

// console.* goes to the room's log, tagged with the game and room, like
// `ctx.log` (the engine would write it to a stdout nobody reads).
for (const [name, level] of [
  ['log', 'info'],
  ['info', 'info'],
  ['debug', 'debug'],
  ['warn', 'warn'],
  ['error', 'error'],
]) {
  console[name] = (...args) =>
    host.log(level, args.map((a) => (typeof a === 'string' ? a : describe(a).replace(/^thrown value: /, ''))).join(' '));
}

/** Thrown to trap the call: it has no field the world could read as an error value. */
const TRAP = Object.freeze(Object.create(null));

/**
 * Runs one export. A `Reject` becomes the world's rejection; any other
 * exception is written to the room's log (message and stack) and traps
 * the call, so the host restarts the room from its checkpoint exactly as
 * it does for a Rust panic.
 */
function guarded(name, rejects, call) {
  try {
    return call();
  } catch (e) {
    // Already logged where it was thrown (the game's constructor).
    if (e === TRAP) throw e;
    if (rejects && e instanceof Reject) throw { code: e.code, message: e.message };
    if (typeof e === 'string' && (name === 'init' || name === 'restore')) throw e;
    host.log('error', `uncaught exception in ${name}: ${describe(e)}`);
    throw TRAP;
  }
}

/** The `game` export of the `room` world for the game class `Game`. */
export function bind(Game) {
  let runner;
  const live = () => (runner ??= guarded('the game constructor', false, () => new Runner(Game, backend)));
  return {
    init: (room, config) => guarded('init', false, () => live().init(room, config)),
    onJoin: (player) => guarded('onJoin', true, () => live().onJoin(player)),
    onLeave: (player) => guarded('onLeave', false, () => live().onLeave(player)),
    onMessage: (from, payload) => guarded('onMessage', true, () => live().onMessage(from, payload)),
    onTick: () => guarded('onTick', false, () => live().onTick()),
    snapshot: () => guarded('snapshot', false, () => live().snapshot()),
    restore: (state) => guarded('restore', false, () => live().restore(state)),
  };
}
