// Respawn's browser client: one WebSocket to the host, kept alive and
// reconnected, with the player's seat resumed after a drop.
//
// Dependency-free ES module. Browsers are the target; Node 20 works when a
// WebSocket implementation is passed in (`{WebSocket}`).
//
//   import {RespawnClient} from "/respawn.js";
//   const client = new RespawnClient("ws://127.0.0.1:7700/");
//   client.on("event", (data) => render(data));
//   client.on("state", (state) => badge.textContent = state);
//   client.connect();
//   await client.join("tictactoe", "lobby", "ann");
//   await client.request({action: "move", cell: 4});
//
// On a host that wants signed join tickets, pass `ticket`: a function is
// asked before every join, since tickets expire within minutes:
//
//   new RespawnClient("wss://play.example.com/", {
//     ticket: async () => (await (await fetch("/ticket")).json()).ticket,
//   });
//
// In a fleet, `url` is the entry point (any node): a join or resume
// answered `room_elsewhere` is sent again on the node it names, and after
// a drop (`room_moved`, a dead node) the client starts from `url` again.

/** The protocol version this client speaks (see the `welcome` frame). */
export const PROTOCOL = 1;

const DEFAULT_BACKOFF = Object.freeze({baseMs: 250, maxMs: 10000});

/**
 * Delay before reconnect attempt `attempt` (0 for the first retry):
 * exponential backoff with full jitter, so that thousands of clients cut at
 * the same moment do not come back at the same moment.
 */
export function backoffDelay(attempt, opts = DEFAULT_BACKOFF, random = Math.random) {
  const baseMs = opts?.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const maxMs = opts?.maxMs ?? DEFAULT_BACKOFF.maxMs;
  const cap = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return random() * cap;
}

/** A refusal from the host or the client, with the protocol's `code`. */
export class RespawnError extends Error {
  constructor(code, message, {reason, ref, frame, cause} = {}) {
    super(message || code, cause === undefined ? undefined : {cause});
    this.name = "RespawnError";
    this.code = code;
    this.reason = reason;
    this.ref = ref;
    this.frame = frame;
  }
}

/** `room_elsewhere` answers followed in a row before giving up. */
const MAX_REDIRECTS = 3;

/** Error codes after which the host closes the connection; we come back. */
const CLOSING_CODES = new Set(["superseded", "slow_consumer", "idle_timeout", "server_full"]);

/**
 * Error codes that mean the player is no longer in its room
 * (`guest_restarted`, by contrast, fails one message and keeps the room).
 * The host answering `not_joined` means our idea of being seated was stale.
 * After `superseded` the seat lives on in another connection (another tab
 * of the same user): resuming or rejoining would take it back, and that
 * tab would do the same, so neither is done.
 */
const ROOM_GONE_CODES = new Set(["guest_fault", "room_closed", "not_joined", "superseded", "banned"]);

const now = () => (globalThis.performance?.now ? globalThis.performance.now() : Date.now());

/**
 * A connection to a Respawn host that survives drops.
 *
 * Events (`on(type, fn)`; `fn` gets one argument):
 * - `state`: `"connecting" | "connected" | "reconnecting" | "closed"`
 * - `welcome`, `joined`, `resumed`, `swapped`, `restarted`, `kicked`,
 *   `closed` (an operator closed the room: out of it, like `kicked`),
 *   `system` (the operators' `message` to the room), `left`, `shutdown`:
 *   the host's frame. A `resumed` that answers a join
 *   (the ticket's user already had a seat in the room, and this connection
 *   took it over) is reported as `joined`, with `takeover: true`.
 * - `event`: the game's payload (the frame's `data`)
 * - `error`: a {@link RespawnError} that no pending promise took, or that
 *   took the player out of its room (`room` is null then)
 * - `seatlost`: `{game, room, code, message}`: a resume failed, the client
 *   is rejoining the room as a new player
 * - `retry`: `{attempt, delayMs}` before each reconnect
 * - `frame`: every frame from the host, for debugging
 */
export class RespawnClient {
  /**
   * @param {string} url `ws://host:port/`; in a fleet, any node (or an
   *   entry point in front of them)
   * @param {object} [opts]
   * @param {Function} [opts.WebSocket] constructor; defaults to the global one
   * @param {{baseMs: number, maxMs: number}} [opts.backoff]
   * @param {() => number} [opts.random] in [0, 1), for the jitter
   * @param {number} [opts.requestTimeoutMs] how long `request`/`leave`, and
   *   an async `ticket`, wait
   * @param {number} [opts.welcomeTimeoutMs] a socket that sends no welcome
   *   within this long is given up and retried
   * @param {number} [opts.outboxLimit] frames kept while disconnected
   * @param {string | ((want: {game: string, room: string, name?: string}) =>
   *   string | null | Promise<string | null>)} [opts.ticket] the signed join
   *   ticket, or a function asked for a fresh one before every join sent
   *   (the app's, and the rejoin after a lost seat); null joins without one.
   *   Also the `ticket` property, which may be changed at any time.
   */
  constructor(url, opts = {}) {
    this.url = url;
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    this._backoff = {...DEFAULT_BACKOFF, ...opts.backoff};
    this._random = opts.random ?? Math.random;
    this._requestTimeoutMs = opts.requestTimeoutMs ?? 10000;
    this._welcomeTimeoutMs = opts.welcomeTimeoutMs ?? 10000;
    this._outboxLimit = opts.outboxLimit ?? 256;
    this.ticket = opts.ticket ?? null;

    this._listeners = new Map();
    this.state = "closed";
    /** From the latest `welcome`. */
    this.server = null;
    /** This player's id; after a resume, the id of the original seat. */
    this.player = null;
    /** `{game, room, version}` once seated, else null. */
    this.room = null;
    /** The verified user id of the seat, when it was joined with a ticket. */
    this.user = null;

    this._ws = null;
    /** In a fleet: the node a `room_elsewhere` sent us to (null: `url`). */
    this._target = null;
    /** `room_elsewhere` answers followed since the last seat. */
    this._hops = 0;
    this._stopped = true;
    this._attempt = 0;
    this._retryTimer = null;
    this._welcomeTimer = null;
    this._heartbeat = null;
    this._lastFrameAt = 0;
    this._lastTickAt = 0;
    this._welcomed = false;
    this._token = null;
    /** `seq` of the last room frame received (room frames count from 1 per seat). */
    this._lastSeq = 0;
    this._nextRef = 1;
    /** The room the app asked for: `{game, room, name}`; rejoined after a lost seat. */
    this._want = null;
    /** A join was sent and may have seated us, so a new connection resumes first. */
    this._seatMaybe = false;
    this._resuming = false;
    /** The new connection's own `{player, token}`, used if the resume fails. */
    this._fresh = null;
    this._joinRef = null;
    /** The `_joinRef` of a join still waiting for its ticket. */
    this._ticketRef = null;
    this._joinWaiter = null;
    this._outbox = [];
    this._pending = new Map();
  }

  // --- events -------------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  _emit(type, arg) {
    for (const fn of [...(this._listeners.get(type) ?? [])]) {
      try {
        fn(arg);
      } catch (e) {
        // A broken listener must not break the connection's bookkeeping;
        // surface it as an uncaught error instead.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  // --- public API ---------------------------------------------------------

  /** True while a join (the app's, or the automatic rejoin) has not completed. */
  get joining() {
    return this._want !== null && this.room === null;
  }

  /** Opens the connection (and keeps reopening it until `close()`). */
  connect() {
    if (!this._stopped) return;
    if (typeof this._WebSocket !== "function") {
      throw new RespawnError("no_websocket", "no WebSocket implementation: pass {WebSocket} in the options");
    }
    this._stopped = false;
    this._attempt = 0;
    this._open("connecting");
  }

  /**
   * Enters `room` of `game` as `name` (which may be left out with a ticket
   * that names the player). Resolves with the `joined` frame; rejects with
   * a {@link RespawnError}: `code`, and the game's `reason` for
   * `join_refused`. Ticket refusals: `ticket_required`, `ticket_invalid`,
   * `ticket_expired`, `ticket_not_yet_valid`, `ticket_wrong_issuer`,
   * `ticket_wrong_audience`, `ticket_bad_signature`, `ticket_unknown_key`,
   * `ticket_algorithm`, `ticket_not_allowed` (not for this game or room),
   * and `ticket_unavailable` when the `ticket` function failed (`cause`);
   * also `banned` and `too_many_joins`. Connects first if needed.
   */
  join(game, room, name) {
    if (this._stopped) this.connect();
    if (this._want || this.room) {
      return Promise.reject(new RespawnError("already_joined", "leave the current room first"));
    }
    if ([...this._pending.values()].some((p) => p.kind === "leave")) {
      return Promise.reject(new RespawnError("leaving", "wait for leave() to complete before joining"));
    }
    this._want = {game, room, name};
    this._hops = 0;
    return new Promise((resolve, reject) => {
      this._joinWaiter = {resolve, reject};
      if (this._sessionReady()) this._sendJoin();
    });
  }

  /** Sends a game message; queued while reconnecting. */
  send(data) {
    this._enqueue({type: "message", data});
  }

  /**
   * Sends a game message and resolves when the game accepted it (`ack`);
   * rejects with the game's refusal (`code` `rejected`, `reason` e.g.
   * `cell-taken`).
   */
  request(data, {timeoutMs = this._requestTimeoutMs} = {}) {
    return this._call({type: "message", data}, "message", timeoutMs);
  }

  /**
   * Leaves the room; the host frees the seat at once instead of keeping it
   * for a resume. While disconnected, the leave waits: the next connection
   * resumes the seat only to leave it.
   */
  leave() {
    const seated = this._seatMaybe || this.room;
    this._want = null;
    this.room = null;
    // A join still waiting for its ticket is simply never sent.
    if (this._ticketRef !== null) this._joinRef = this._ticketRef = null;
    this._failJoin(new RespawnError("left", "left before the join completed"));
    if (!seated || this._stopped) {
      this._seatMaybe = false;
      return Promise.resolve(null);
    }
    return this._call({type: "leave"}, "leave", this._requestTimeoutMs);
  }

  /**
   * Closes for good: no reconnect. The host keeps the seat for its grace
   * period, as after any drop; call `leave()` first to free it at once.
   */
  close() {
    this._stopped = true;
    this._target = null;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._dropSocket(1000, "client closed");
    const err = new RespawnError("closed", "the client was closed");
    this._failJoin(err);
    this._failOutbox(err);
    for (const [ref, p] of this._pending) {
      this._pending.delete(ref);
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._want = null;
    this._seatMaybe = false;
    this.room = null;
    this._setState("closed");
  }

  // --- connection ---------------------------------------------------------

  _open(state) {
    this._setState(state);
    let ws;
    try {
      ws = new this._WebSocket(this._target ?? this.url);
    } catch (e) {
      if (e?.name === "SyntaxError") {
        // A malformed URL will not get better by retrying.
        this._emit("error", new RespawnError("bad_url", e.message));
        this.close();
        return;
      }
      this._socketGone(null);
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._resuming = false;
    this._joinRef = this._ticketRef = null;
    if ("binaryType" in ws) ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => this._onMessage(ws, ev.data);
    ws.onclose = () => this._socketGone(ws);
    ws.onerror = () => {};
    this._welcomeTimer = setTimeout(() => this._socketGone(ws), this._welcomeTimeoutMs);
  }

  /** Forgets the current socket; its late events are ignored from now on. */
  _dropSocket(code, reason) {
    clearTimeout(this._welcomeTimer);
    clearInterval(this._heartbeat);
    this._welcomeTimer = this._heartbeat = null;
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._resuming = false;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Closing a socket that never opened can throw; it is gone either way.
    }
  }

  _socketGone(ws) {
    if (ws !== this._ws && ws !== null) return;
    // A dead peer's close handshake can take long in browsers: do not wait
    // for it, reconnect now.
    this._dropSocket(4000, "connection lost");
    // In a fleet the node we were sent to may be the one that died: start
    // again from the entry point, which sends us on.
    this._target = null;
    if (this._stopped) return;
    const attempt = this._attempt++;
    const delayMs = backoffDelay(attempt, this._backoff, this._random);
    this._setState("reconnecting");
    this._emit("retry", {attempt, delayMs});
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._stopped) this._open("reconnecting");
    }, delayMs);
  }

  /** In a fleet: the room lives on the node at `url`; go there now. */
  _redirect(url) {
    this._hops++;
    this._dropSocket(4000, "room elsewhere");
    if (this._stopped) return;
    this._target = url;
    this._open("reconnecting");
  }

  _startHeartbeat(idleMs) {
    if (!(idleMs > 0)) return;
    const period = Math.max(50, Math.floor(idleMs / 3));
    this._lastTickAt = now();
    this._heartbeat = setInterval(() => {
      const t = now();
      // If the timer itself ran late (a frozen or throttled background
      // tab), the silence says nothing about the connection: ping and look
      // again at the next tick.
      const timersOnTime = t - this._lastTickAt < 2 * period;
      this._lastTickAt = t;
      if (timersOnTime && t - this._lastFrameAt >= idleMs) {
        this._socketGone(this._ws);
        return;
      }
      this._write({type: "ping"});
    }, period);
  }

  _write(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Welcomed, not resuming, not waiting for a join: frames can go out now. */
  _sessionReady() {
    return this._welcomed && !this._resuming && this._ws?.readyState === 1;
  }

  _enqueue(frame, pendingRef) {
    if (this._stopped) throw new RespawnError("closed", "the client is closed; call connect()");
    if (this._sessionReady() && this._joinRef === null && this._outbox.length === 0) {
      if (this._write(frame)) return;
    }
    if (this._outbox.length >= this._outboxLimit) {
      throw new RespawnError("outbox_full", `more than ${this._outboxLimit} frames waiting for the connection`);
    }
    this._outbox.push({frame, ref: pendingRef});
  }

  _flush() {
    if (!this._sessionReady() || this._joinRef !== null) return;
    while (this._outbox.length) {
      if (!this._write(this._outbox[0].frame)) return;
      this._outbox.shift();
    }
  }

  /** Drops queued frames, settling the promises of those that had one. */
  _failOutbox(err) {
    const queued = this._outbox;
    this._outbox = [];
    for (const {ref} of queued) {
      const p = ref === undefined ? null : this._pending.get(ref);
      if (!p) continue;
      this._pending.delete(ref);
      clearTimeout(p.timer);
      if (p.kind === "leave") p.resolve(null);
      else p.reject(err);
    }
  }

  _call(frame, kind, timeoutMs) {
    const ref = this._nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new RespawnError("timeout", `no reply to ${frame.type} within ${timeoutMs} ms`, {ref}));
      }, timeoutMs);
      this._pending.set(ref, {kind, resolve, reject, timer});
      try {
        this._enqueue({...frame, ref}, ref);
      } catch (e) {
        clearTimeout(timer);
        this._pending.delete(ref);
        reject(e);
      }
    });
  }

  _settle(ref, ok, value) {
    const p = this._pending.get(ref);
    if (!p) return false;
    this._pending.delete(ref);
    clearTimeout(p.timer);
    if (ok) p.resolve(value);
    else p.reject(value);
    return true;
  }

  /**
   * Sends the join for `_want`, with a ticket if there is one. Frames wait
   * behind it from now on, also while an async ticket is on its way.
   */
  _sendJoin() {
    if (!this._want || this._joinRef !== null) return;
    const want = this._want;
    const ref = this._nextRef++;
    this._joinRef = ref;
    let ticket;
    try {
      ticket = typeof this.ticket === "function" ? this.ticket({...want}) : this.ticket;
    } catch (e) {
      this._ticketFailed(e);
      return;
    }
    if (typeof ticket?.then !== "function") {
      this._writeJoin(want, ref, ticket);
      return;
    }
    this._ticketRef = ref;
    const ws = this._ws;
    // Left, closed or cut off meanwhile: the next connection asks again.
    const current = () => this._ticketRef === ref && this._ws === ws;
    const ms = this._requestTimeoutMs;
    const timer = setTimeout(() => current() && this._ticketFailed(new Error(`no ticket within ${ms} ms`)), ms);
    ticket.then(
      (t) => {
        clearTimeout(timer);
        if (current()) this._writeJoin(want, ref, t);
      },
      (e) => {
        clearTimeout(timer);
        if (current()) this._ticketFailed(e);
      },
    );
  }

  _writeJoin(want, ref, ticket) {
    this._ticketRef = null;
    if (ticket != null && typeof ticket !== "string") {
      this._ticketFailed(new TypeError(`the ticket is a ${typeof ticket}, not a string`));
      return;
    }
    this._seatMaybe = true;
    // A new seat numbers its frames from 1.
    this._lastSeq = 0;
    const frame = {type: "join", game: want.game, room: want.room};
    if (want.name != null && want.name !== "") frame.name = want.name;
    if (ticket) frame.ticket = ticket;
    this._write({...frame, ref});
  }

  /** No ticket, no join: fails like a join the host refused. */
  _ticketFailed(cause) {
    const err = new RespawnError("ticket_unavailable", `could not get a join ticket: ${cause?.message ?? cause}`, {cause});
    this._joinRef = this._ticketRef = null;
    this._want = null;
    this._seatMaybe = false;
    this._failOutbox(err);
    if (!this._failJoin(err)) this._emit("error", err);
  }

  /** The host seated us (`joined`, or a taken-over seat's `resumed`). */
  _joinAnswered(f) {
    this._joinRef = null;
    this._hops = 0;
    if (!this._want) {
      // The app left before the join completed; the queued `leave` goes out next.
      this._flush();
      return;
    }
    this.room = {game: f.game, room: f.room, version: f.version};
    this.player = f.player ?? this.player;
    this.user = f.user ?? null;
    const w = this._joinWaiter;
    this._joinWaiter = null;
    this._emit("joined", f);
    w?.resolve(f);
    this._flush();
  }

  _failJoin(err) {
    const w = this._joinWaiter;
    this._joinWaiter = null;
    if (w) w.reject(err);
    return Boolean(w);
  }

  /** The session is usable again: join what the app wants, send what waited. */
  _ready() {
    this._attempt = 0;
    this._setState("connected");
    if (this._want && !this.room) this._sendJoin();
    this._flush();
  }

  // --- frames -------------------------------------------------------------

  _onMessage(ws, raw) {
    if (ws !== this._ws) return;
    this._lastFrameAt = now();
    let frame;
    try {
      const text = typeof raw === "string" ? raw : new TextDecoder().decode(raw);
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (typeof frame.seq === "number") this._lastSeq = frame.seq;
    this._emit("frame", frame);
    const handler = HANDLERS[frame.type];
    if (handler) handler.call(this, frame);
  }
}

/** One handler per host frame type, called with the client as `this`. */
const HANDLERS = {
  welcome(f) {
    clearTimeout(this._welcomeTimer);
    this._welcomeTimer = null;
    this._welcomed = true;
    this.server = f;
    this._emit("welcome", f);
    this._startHeartbeat(f.idle_timeout_ms);
    if (this._seatMaybe && this._token) {
      this._resuming = true;
      this._fresh = {player: f.player, token: f.resume};
      // The host resends the room frames after `last_seq` that the dead
      // connection swallowed.
      this._write({type: "resume", token: this._token, last_seq: this._lastSeq});
      return;
    }
    this.player = f.player;
    this._token = f.resume ?? null;
    this._ready();
  },

  resumed(f) {
    if (!this._resuming) {
      // One seat per user: the join found the ticket's user seated in the
      // room already (another tab), and this connection took that seat.
      if (this._joinRef !== null && (f.ref === undefined || f.ref === this._joinRef)) {
        // The seat has its own token, and numbers its frames on from its
        // own count (the host replays what it kept).
        this._token = f.resume ?? this._token;
        this._joinAnswered({...f, type: "joined", takeover: true});
      }
      return;
    }
    this._resuming = false;
    this._fresh = null;
    this._hops = 0;
    // The host crashed and came back without the last frames we saw (a
    // durability level below `strict`): its numbering goes on from there.
    if (typeof f.rewound === "number" && f.rewound > 0) this._lastSeq = Math.max(0, this._lastSeq - f.rewound);
    this.player = f.player;
    this._token = f.resume ?? this._token;
    this.user = f.user ?? this.user;
    this._seatMaybe = true;
    if (f.game && !this._want) {
      // The app left while we were away; the queued `leave` goes out next.
      this._ready();
      return;
    }
    if (f.game) {
      this.room = {game: f.game, room: f.room, version: f.version};
      this._joinRef = null;
      const w = this._joinWaiter;
      this._joinWaiter = null;
      w?.resolve({...f, type: "joined"});
    }
    this._emit("resumed", f);
    this._ready();
  },

  joined(f) {
    if (this._joinRef !== null && f.ref !== undefined && f.ref !== this._joinRef) return;
    this._lastSeq = 0;
    this._joinAnswered(f);
  },

  event(f) {
    this._emit("event", f.data);
  },

  ack(f) {
    this._settle(f.ref, true, f);
  },

  pong() {},

  left(f) {
    this.room = null;
    this._seatMaybe = this._joinRef !== null;
    if (f.ref === undefined || !this._settle(f.ref, true, f)) {
      for (const [ref, p] of this._pending) if (p.kind === "leave") this._settle(ref, true, f);
    }
    this._emit("left", f);
  },

  swapped(f) {
    if (this.room) this.room.version = f.version;
    this._emit("swapped", f);
  },

  restarted(f) {
    if (this.room && f.version) this.room.version = f.version;
    this._emit("restarted", f);
  },

  kicked(f) {
    this.room = null;
    this._want = null;
    this._seatMaybe = false;
    this._emit("kicked", f);
  },

  closed(f) {
    this.room = null;
    this._want = null;
    this._seatMaybe = false;
    this._emit("closed", f);
  },

  system(f) {
    this._emit("system", f);
  },

  shutdown(f) {
    // The host closes the socket next; the ordinary reconnect follows.
    this._emit("shutdown", f);
  },

  error(f) {
    const err = new RespawnError(f.code, f.message, {reason: f.reason, ref: f.ref, frame: f});

    // A fleet: the room of this resume or join lives on another node.
    if (f.code === "room_elsewhere" && typeof f.node?.ws === "string") {
      // A join the app has left meanwhile fails below, as a refused one.
      const forJoin = f.ref !== undefined && f.ref === this._joinRef && this._want !== null;
      if ((this._resuming || forJoin) && this._hops < MAX_REDIRECTS) {
        if (forJoin) {
          // Not seated here: the owner gets the join.
          this._joinRef = null;
          this._seatMaybe = false;
        }
        this._redirect(f.node.ws);
        return;
      }
    }
    if (f.code === "storage_unavailable" && this._resuming) {
      // The room is changing hands (a fleet) or its host cannot save right
      // now: resume again shortly, from the entry point.
      this._emit("error", err);
      this._socketGone(this._ws);
      return;
    }
    if (f.code === "room_elsewhere" && this._resuming) {
      // Nodes that keep sending us on, or a node we cannot reach over
      // WebSocket: try again later, from the entry point.
      this._hops = 0;
      this._emit("error", err);
      this._socketGone(this._ws);
      return;
    }

    if (f.code === "resume_failed" && this._resuming) {
      this._resuming = false;
      const lost = this.room;
      this.room = null;
      this._seatMaybe = false;
      this.player = this._fresh?.player ?? null;
      this._token = this._fresh?.token ?? null;
      this._fresh = null;
      const lostErr = new RespawnError("seat_lost", "the seat was lost while disconnected; queued messages were dropped");
      this._failOutbox(lostErr);
      // Acks for the old seat will never come.
      for (const [ref, p] of this._pending) if (p.kind === "message") this._settle(ref, false, lostErr);
      if (lost) this._emit("seatlost", {game: lost.game, room: lost.room, code: f.code, message: f.message});
      this._ready();
      return;
    }

    if (f.ref !== undefined && f.ref === this._joinRef) {
      this._joinRef = null;
      this._want = null;
      this._seatMaybe = false;
      this._failOutbox(err);
      if (!this._failJoin(err)) this._emit("error", err);
      return;
    }

    const roomGone =
      ROOM_GONE_CODES.has(f.code) &&
      !(f.code === "not_joined" && this._joinRef !== null);
    if (roomGone) {
      this.room = null;
      this._want = null;
      this._seatMaybe = false;
      this._failJoin(err);
    }
    const settled = f.ref !== undefined && this._settle(f.ref, false, err);
    // Losing the room is news for the app even when a promise took the error.
    if (!settled || roomGone) this._emit("error", err);
    // The host closes the socket after these; do not wait for its close
    // handshake to start coming back.
    if (CLOSING_CODES.has(f.code)) this._socketGone(this._ws);
  },
};
