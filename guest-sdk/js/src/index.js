// The Respawn guest SDK for JavaScript and TypeScript: what a game's code
// imports. Nothing here touches the WIT imports, so a game's module and
// this file load in Node for unit tests (see ./testing.js); the component's
// glue (./component.js) is added by `respawn-js build`.

/** A game's refusal of a join or a message: the player gets `code`. */
export class Reject extends Error {
  /**
   * @param {string} code short machine-readable word, e.g. `cell-taken`
   * @param {string} message for people
   */
  constructor(code, message) {
    super(message);
    this.name = 'Reject';
    this.code = String(code);
  }
}

/** Why a storage call failed; `code` is the WIT `kv-error` case. */
export class KvError extends Error {
  constructor(code, message, limit) {
    super(message);
    this.name = 'KvError';
    this.code = code;
    if (limit !== undefined) this.limit = limit;
  }
}

/** The code of the rejection sent when a message is not JSON. */
export const INVALID_MESSAGE = 'invalid-message';

/** Longest storage key, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 256;
/** Most keys one `kv.list` returns. */
export const MAX_LIST = 1000;

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** JSON text as bytes (what the WIT world carries); throws for what JSON cannot say (`undefined`, a function). */
export function toBytes(value) {
  const text = JSON.stringify(value);
  if (typeof text !== 'string') throw new TypeError(`${typeof value} is not JSON`);
  return encoder.encode(text);
}

/** Bytes of JSON text as a value. */
export function fromBytes(bytes) {
  return JSON.parse(decoder.decode(bytes));
}

/** A WIT player id (u64, a BigInt) as a Number, which is exact below 2^53. */
export function playerId(id) {
  const n = Number(id);
  if (!Number.isSafeInteger(n)) throw new RangeError(`player id ${id} does not fit a JS number`);
  return n;
}

/** A random u64 (a BigInt) as a number in [0, 1): its top 53 bits. */
export function toUnit(u64) {
  return Number(u64 >> 11n) / 2 ** 53;
}

/**
 * The room as a game sees it: send to players, the room's clock and
 * random numbers, ticks, and the game's storage. Effects are delivered
 * when the current call returns, a rejected call's too; if the call fails
 * (any exception but a `Reject`) they are dropped.
 */
export class Ctx {
  /** @param backend the host's imports, or a test recorder */
  constructor(backend) {
    this._b = backend;
    this.kv = new Kv(backend);
  }
  /** Sends a JSON value to one player. */
  send(to, msg) {
    const bytes = this._encode(msg);
    if (bytes) this._b.send(to, bytes);
  }
  /** Sends a JSON value to every player of the room. */
  broadcast(msg) {
    const bytes = this._encode(msg);
    if (bytes) this._b.broadcast(bytes, undefined);
  }
  /** Sends a JSON value to every player but `except`. */
  broadcastExcept(except, msg) {
    const bytes = this._encode(msg);
    if (bytes) this._b.broadcast(bytes, except);
  }
  /** Removes a player from the room, telling them why. */
  kick(player, reason) {
    this._b.kick(player, String(reason));
  }
  /** Writes to the host's log, tagged with the game and room. */
  log(level, message) {
    this._b.log(LEVELS.includes(level) ? level : 'info', String(message));
  }
  /** The room's clock in ms since the Unix epoch, fixed for the call (`Date.now()` reads it too). */
  nowMs() {
    return this._b.nowMs();
  }
  /** A random u64 (a BigInt) from the room's seeded generator. */
  randomU64() {
    return this._b.randomU64();
  }
  /** A random number in [0, 1) from the room's seeded generator. */
  random() {
    return toUnit(this._b.randomU64());
  }
  /** A random integer in [0, n), unbiased (n a positive safe integer; 0 yields 0). */
  randomBelow(n) {
    if (!(n > 0)) return 0;
    const big = BigInt(n);
    const zone = 2n ** 64n - (2n ** 64n % big);
    for (;;) {
      const r = this._b.randomU64();
      if (r < zone) return Number(r % big);
    }
  }
  /** Asks for `onTick` every `ms` milliseconds; 0 stops ticking. */
  setTickInterval(ms) {
    this._b.setTickInterval(ms >>> 0);
  }
  _encode(msg) {
    try {
      return toBytes(msg);
    } catch (e) {
      this._b.log('error', `message not sent: it does not serialize to JSON: ${e && e.message}`);
      return null;
    }
  }
}

/**
 * The game's durable storage, shared by its rooms. Values are JSON. Calls
 * work while the room handles an input and throw `KvError` with code
 * `not-now` in `init`; the writes of one input become visible to other
 * rooms, and durable, when its call returns (none if it fails with
 * anything but a `Reject`).
 */
export class Kv {
  constructor(backend) {
    this._b = backend;
  }
  /** The value under `key`, or `undefined`. */
  get(key) {
    const bytes = this._b.kvGet(key);
    if (bytes === undefined || bytes === null) return undefined;
    try {
      return fromBytes(bytes);
    } catch (e) {
      throw new KvError('decode', `the stored value under ${key} is not JSON: ${e.message}`);
    }
  }
  /** Sets `key` to `value` (stored as JSON). */
  set(key, value) {
    let bytes;
    try {
      bytes = toBytes(value);
    } catch (e) {
      throw new KvError('encode', `the value does not serialize to JSON: ${e.message}`);
    }
    this._b.kvSet(key, bytes);
  }
  /** Removes `key` (no error if it was absent). */
  delete(key) {
    this._b.kvDelete(key);
  }
  /** Keys starting with `prefix` in byte order, after `startAfter`, at most `limit` (≤ 1000). */
  list(prefix, { startAfter, limit = MAX_LIST } = {}) {
    return this._b.kvList(prefix, startAfter, Math.min(limit >>> 0, MAX_LIST));
  }
}

/** A WIT `kv-error` (thrown by an import) as a `KvError`. */
export function kvError(raw) {
  const e = raw && raw.payload !== undefined ? raw.payload : raw;
  switch (e && e.tag) {
    case 'invalid-key':
      return new KvError('invalid-key', `a key is 1 to ${MAX_KEY_BYTES} bytes`);
    case 'too-large':
      return new KvError('too-large', `values are at most ${e.val} bytes`, Number(e.val));
    case 'quota-exceeded':
      return new KvError('quota-exceeded', `the game's storage is full (${e.val} bytes)`, Number(e.val));
    case 'not-now':
      return new KvError('not-now', 'storage is only available while handling an input');
    case 'unavailable':
      return new KvError('unavailable', 'storage is unavailable');
    default:
      return raw;
  }
}

/** The player record a game sees: numbers for ids, claims as parsed JSON. */
export function toPlayer(p) {
  const player = { id: playerId(p.id), name: p.name, user: null };
  if (p.user) {
    const claims = {};
    for (const [name, text] of p.user.claims) {
      try {
        claims[name] = JSON.parse(text);
      } catch {
        claims[name] = text;
      }
    }
    player.user = { userId: p.user.userId, claims };
  }
  return player;
}

/**
 * Everything the component (and the test room) does around a game: one
 * instance of the game class, JSON in and out, rejections as values.
 * `Game` is the game's class: its constructor builds the initial state,
 * and its own fields are the state (`JSON.stringify` writes a snapshot;
 * a restore assigns the parsed fields over a new instance, so a field a
 * newer version added keeps its constructor default).
 */
export class Runner {
  constructor(Game, backend) {
    this.Game = Game;
    this.backend = backend;
    this.ctx = new Ctx(backend);
    this.game = new Game();
  }
  init(room, config) {
    let cfg = {};
    if (config.length > 0) {
      try {
        cfg = fromBytes(config);
      } catch (e) {
        throw `game config is not valid JSON: ${e.message}`;
      }
    }
    if (typeof this.game.init === 'function') this.game.init(this.ctx, room, cfg);
  }
  onJoin(player) {
    if (typeof this.game.onJoin === 'function') this.game.onJoin(this.ctx, toPlayer(player));
  }
  onLeave(player) {
    if (typeof this.game.onLeave === 'function') this.game.onLeave(this.ctx, playerId(player));
  }
  onMessage(from, payload) {
    let msg;
    try {
      msg = fromBytes(payload);
    } catch (e) {
      throw new Reject(INVALID_MESSAGE, `this game cannot read that message: ${e.message}`);
    }
    if (typeof this.game.onMessage === 'function') this.game.onMessage(this.ctx, playerId(from), msg);
  }
  onTick() {
    if (typeof this.game.onTick === 'function') this.game.onTick(this.ctx);
  }
  snapshot() {
    const text = JSON.stringify(this.game);
    if (typeof text !== 'string') throw new Error('cannot snapshot this game: its state is not JSON');
    return encoder.encode(text);
  }
  restore(state) {
    let fields;
    try {
      fields = fromBytes(state);
    } catch (e) {
      throw `cannot restore this state: ${e.message}`;
    }
    if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) {
      throw 'cannot restore this state: it is not a JSON object';
    }
    this.game = typeof this.Game.restore === 'function' ? this.Game.restore(fields) : Object.assign(new this.Game(), fields);
  }
}

/** An exception as one log line: its message and, when it has one, its stack. */
export function describe(e) {
  if (e instanceof Error) {
    const stack = typeof e.stack === 'string' && e.stack.trim() ? `\n${e.stack.trim()}` : '';
    return `${e.name}: ${e.message}${stack}`;
  }
  try {
    return `thrown value: ${JSON.stringify(e)}`;
  } catch {
    return `thrown value: ${String(e)}`;
  }
}
