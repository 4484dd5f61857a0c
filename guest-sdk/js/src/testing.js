// A room without a host, for unit tests of a game's logic in Node: the
// same Runner the component uses, with a recorder for effects and an
// in-memory storage with the host's limits.

import { KvError, MAX_KEY_BYTES, Reject, Runner, fromBytes } from './index.js';

/** The host's default limit on one stored value, in bytes. */
export const KV_MAX_VALUE_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/** In-memory game storage; share one between rooms with `new TestRoom(Game, { kv })`. */
export class MemoryKv {
  constructor() {
    this.entries = new Map();
    this.quota = null;
  }
  /** Keys in byte order. */
  keys() {
    return [...this.entries.keys()].sort(byteOrder);
  }
  /** The value under `key` as JSON, or `undefined`. */
  get(key) {
    const bytes = this.entries.get(key);
    return bytes === undefined ? undefined : fromBytes(bytes);
  }
  /** Stores `value` as JSON under `key`, bypassing limits (test set-up). */
  set(key, value) {
    this.entries.set(key, encoder.encode(JSON.stringify(value)));
  }
  used() {
    let n = 0;
    for (const [k, v] of this.entries) n += encoder.encode(k).length + v.length;
    return n;
  }
}

function byteOrder(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function checkKey(key) {
  const n = encoder.encode(String(key)).length;
  if (n < 1 || n > MAX_KEY_BYTES) throw new KvError('invalid-key', `a key is 1 to ${MAX_KEY_BYTES} bytes`);
}

/**
 * One room of `Game`, driven by the test: `join`, `leave`, `message`,
 * `tick`, then look at what players `received` and at `effects`.
 */
export class TestRoom {
  constructor(Game, { kv = new MemoryKv(), room = 'test', config = {}, seed = 1n, nowMs = 1_700_000_000_000 } = {}) {
    this.kv = kv;
    this.effects = [];
    this.clock = nowMs;
    this.members = new Set();
    this.tickMs = 0;
    this.inInput = false;
    let state = BigInt(seed) || 1n;
    const mask = 2n ** 64n - 1n;
    const self = this;
    this.backend = {
      // Who a frame reaches is decided when it is sent, as in the host.
      send: (to, bytes) => self.effects.push({ kind: 'send', to, data: fromBytes(bytes), reaches: self.members.has(to) ? [to] : [] }),
      broadcast: (bytes, except) =>
        self.effects.push({ kind: 'broadcast', except, data: fromBytes(bytes), reaches: [...self.members].filter((m) => m !== except) }),
      kick: (player, reason) => self.effects.push({ kind: 'kick', player, reason }),
      log: (level, message) => self.effects.push({ kind: 'log', level, message }),
      nowMs: () => self.clock,
      // xorshift64*: deterministic per seed, like the host's seeded streams.
      randomU64: () => {
        state ^= state >> 12n;
        state ^= (state << 25n) & mask;
        state ^= state >> 27n;
        return (state * 2685821657736338717n) & mask;
      },
      setTickInterval: (ms) => {
        self.tickMs = ms;
      },
      kvGet: (key) => (self.storage(key), self.kv.entries.get(key)),
      kvSet: (key, value) => {
        self.storage(key);
        if (value.length > KV_MAX_VALUE_BYTES) throw new KvError('too-large', `values are at most ${KV_MAX_VALUE_BYTES} bytes`, KV_MAX_VALUE_BYTES);
        const old = self.kv.entries.get(key);
        const grows = encoder.encode(key).length + value.length - (old ? encoder.encode(key).length + old.length : 0);
        if (self.kv.quota !== null && self.kv.used() + grows > self.kv.quota) {
          throw new KvError('quota-exceeded', `the game's storage is full (${self.kv.quota} bytes)`, self.kv.quota);
        }
        self.kv.entries.set(key, value);
      },
      kvDelete: (key) => {
        self.storage(key);
        self.kv.entries.delete(key);
      },
      kvList: (prefix, startAfter, limit) => {
        if (!self.inInput) throw new KvError('not-now', 'storage is only available while handling an input');
        return self.kv
          .keys()
          .filter((k) => k.startsWith(prefix) && (startAfter === undefined || byteOrder(k, startAfter) > 0))
          .slice(0, limit);
      },
    };
    this.runner = new Runner(Game, this.backend);
    this.runner.init(room, encoder.encode(JSON.stringify(config)));
  }

  storage(key) {
    if (!this.inInput) throw new KvError('not-now', 'storage is only available while handling an input');
    checkKey(key);
  }

  /** The game object (its fields are the room's state). */
  get game() {
    return this.runner.game;
  }

  /** Runs one input as the host does: a call that fails with anything
   * but a `Reject` loses its effects and its storage writes. */
  input(call) {
    const effects = this.effects.length;
    const entries = new Map(this.kv.entries);
    this.inInput = true;
    try {
      call();
    } catch (e) {
      if (!(e instanceof Reject)) {
        this.effects.length = effects;
        this.kv.entries = entries;
      }
      throw e;
    } finally {
      this.inInput = false;
    }
  }

  /** A player joins; throws the game's `Reject` if it refuses. The
   * player is a member for the join's own effects, as in the host. */
  join(id, name, user = null) {
    const wit = { id: BigInt(id), name, user: user ? { userId: user.userId, claims: Object.entries(user.claims ?? {}).map(([k, v]) => [k, JSON.stringify(v)]) } : undefined };
    const had = this.members.has(id);
    const from = this.effects.length;
    this.members.add(id);
    try {
      this.input(() => this.runner.onJoin(wit));
    } catch (e) {
      if (!had) {
        // Refused: the host never delivers to a player who is not in.
        this.members.delete(id);
        for (const effect of this.effects.slice(from)) effect.reaches = effect.reaches?.filter((m) => m !== id);
      }
      throw e;
    }
  }

  /** A player leaves. */
  leave(id) {
    this.members.delete(id);
    this.input(() => this.runner.onLeave(BigInt(id)));
  }

  /** A player sends `msg` (any JSON value); throws the game's `Reject` if it refuses. */
  message(id, msg) {
    this.input(() => this.runner.onMessage(BigInt(id), encoder.encode(typeof msg === 'string' && msg.startsWith('raw:') ? msg.slice(4) : JSON.stringify(msg))));
  }

  /** Advances the clock by `ms` and ticks once. */
  tick(ms = this.tickMs) {
    this.clock += ms;
    this.input(() => this.runner.onTick());
  }

  /** What `id` would have received since the last `clear`, in order. */
  received(id) {
    return this.effects.filter((e) => e.reaches?.includes(id)).map((e) => e.data);
  }

  /** Forgets recorded effects. */
  clear() {
    this.effects = [];
  }

  /** Snapshot, then restore into a new instance of `Next` (default: the same game): a hot swap. */
  swap(Next = this.runner.Game) {
    const state = this.runner.snapshot();
    const next = new Runner(Next, this.backend);
    next.restore(state);
    this.runner = next;
    return JSON.parse(new TextDecoder().decode(state));
  }
}

export { Reject };
