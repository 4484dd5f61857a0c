// Unit tests of clients/js/respawn.js against a scripted fake WebSocket: no
// host, no browser.
import {test, describe} from "node:test";
import assert from "node:assert/strict";
import {RespawnClient, backoffDelay} from "../../clients/js/respawn.js";

describe("backoffDelay", () => {
  const opts = {baseMs: 250, maxMs: 10000};

  test("is random() times the capped exponential", () => {
    assert.equal(backoffDelay(0, opts, () => 0.5), 125);
    assert.equal(backoffDelay(1, opts, () => 0.5), 250);
    assert.equal(backoffDelay(3, opts, () => 1), 2000);
  });

  test("never exceeds maxMs, even for huge attempts", () => {
    assert.equal(backoffDelay(6, opts, () => 1), 10000);
    assert.equal(backoffDelay(5000, opts, () => 1), 10000);
    assert.equal(backoffDelay(5000, opts, () => 0.25), 2500);
  });

  test("full jitter: random() = 0 gives no wait at all", () => {
    assert.equal(backoffDelay(10, opts, () => 0), 0);
  });

  test("defaults to 250 ms base, 10 s cap", () => {
    assert.equal(backoffDelay(2, undefined, () => 1), 1000);
    assert.equal(backoffDelay(20, {}, () => 1), 10000);
  });
});

/** A WebSocket whose far end the test plays by hand. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedByClient = false;
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.closedByClient = true;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({code: 1000}));
  }
  // --- the host's side ---
  push(frame) {
    this.onmessage?.({data: JSON.stringify(frame)});
  }
  drop() {
    this.readyState = 3;
    this.onclose?.({code: 1006});
  }
  last(type) {
    return this.sent.filter((f) => f.type === type).at(-1);
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(pred, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

function welcome(player, token, extra = {}) {
  return {type: "welcome", protocol: 1, server: "respawn/test", player, resume: token, idle_timeout_ms: 60000, resume_grace_ms: 30000, ...extra};
}

function makeClient(opts = {}) {
  FakeSocket.all = [];
  const client = new RespawnClient("ws://test/", {WebSocket: FakeSocket, random: () => 0, ...opts});
  const seen = [];
  for (const type of ["state", "welcome", "joined", "resumed", "seatlost", "event", "swapped", "restarted", "kicked", "closed", "system", "error", "retry"]) {
    client.on(type, (arg) => seen.push([type, arg]));
  }
  const states = () => seen.filter(([t]) => t === "state").map(([, s]) => s);
  return {client, seen, states};
}

async function joinedClient(opts) {
  const c = makeClient(opts);
  const joining = c.client.join("tictactoe", "r1", "ann");
  await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
  const ws = FakeSocket.all[0];
  ws.push(welcome(7, "tok-7"));
  const join = ws.last("join");
  const ticket = typeof opts?.ticket === "string" ? {ticket: opts.ticket} : {};
  assert.deepEqual(join, {type: "join", game: "tictactoe", room: "r1", name: "ann", ...ticket, ref: join.ref});
  ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", ref: join.ref});
  const joined = await joining;
  assert.equal(joined.version, "1.0.0");
  return {...c, ws};
}

describe("RespawnClient", () => {
  test("connects, joins, sends, and reports game events", async () => {
    const {client, seen, states, ws} = await joinedClient();
    assert.deepEqual(states(), ["connecting", "connected"]);
    assert.deepEqual(client.room, {game: "tictactoe", room: "r1", version: "1.0.0"});
    client.send({action: "move", cell: 4});
    assert.deepEqual(ws.sent.at(-1), {type: "message", data: {action: "move", cell: 4}});
    ws.push({type: "event", data: {type: "state", board: []}});
    assert.deepEqual(seen.filter(([t]) => t === "event").map(([, d]) => d), [{type: "state", board: []}]);
    client.close();
    assert.equal(client.state, "closed");
  });

  test("request resolves on ack and rejects with code and reason", async () => {
    const {client, ws} = await joinedClient();
    const ok = client.request({action: "move", cell: 0});
    const bad = client.request({action: "move", cell: 0});
    const [m1, m2] = ws.sent.filter((f) => f.type === "message");
    ws.push({type: "ack", ref: m1.ref});
    ws.push({type: "error", code: "rejected", reason: "cell-taken", message: "cell 0 is already taken", ref: m2.ref});
    assert.equal((await ok).type, "ack");
    await assert.rejects(bad, (e) => e.code === "rejected" && e.reason === "cell-taken" && /taken/.test(e.message));
    client.close();
  });

  test("a refused join rejects and the client stays usable", async () => {
    const {client} = makeClient();
    const joining = client.join("nope", "r1", "ann");
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    ws.push(welcome(1, "t1"));
    ws.push({type: "error", code: "unknown_game", message: "no game nope", ref: ws.last("join").ref});
    await assert.rejects(joining, (e) => e.code === "unknown_game");
    assert.equal(client.room, null);
    const again = client.join("tictactoe", "r1", "ann");
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 1, version: "1", ref: ws.last("join").ref});
    assert.equal((await again).game, "tictactoe");
    client.close();
  });

  test("after a drop it reconnects, resumes its seat, and sends what waited", async () => {
    const {client, seen, states, ws} = await joinedClient();
    ws.push({seq: 1, type: "event", data: {board: []}});
    ws.push({seq: 2, type: "event", data: {board: [1]}});
    ws.drop();
    assert.equal(client.state, "reconnecting");
    client.send({action: "move", cell: 8});
    await until(() => FakeSocket.all.length === 2 && FakeSocket.all[1].readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(8, "tok-8"));
    assert.deepEqual(ws2.sent, [{type: "resume", token: "tok-7", last_seq: 2}], "resumes before anything else, from the last frame seen");
    assert.equal(client.state, "reconnecting", "not connected until the seat is back");
    ws2.push({type: "resumed", player: 7, game: "tictactoe", room: "r1", version: "1.1.0", resume: "tok-7b"});
    assert.equal(client.state, "connected");
    assert.equal(client.player, 7);
    assert.equal(client.room.version, "1.1.0");
    assert.deepEqual(ws2.sent.at(-1), {type: "message", data: {action: "move", cell: 8}});
    assert.deepEqual(states(), ["connecting", "connected", "reconnecting", "connected"]);
    assert.equal(seen.filter(([t]) => t === "resumed").length, 1);
    assert.equal(seen.filter(([t]) => t === "seatlost").length, 0);

    // The next resume uses the token from `resumed`.
    ws2.drop();
    await until(() => FakeSocket.all[2]?.readyState === 1, "third socket");
    FakeSocket.all[2].push(welcome(9, "tok-9"));
    assert.deepEqual(FakeSocket.all[2].sent, [{type: "resume", token: "tok-7b", last_seq: 2}]);
    client.close();
  });

  test("after a host crash undid frames it saw (rewound), numbering goes on from the host's count", async () => {
    const {client, ws} = await joinedClient();
    for (let seq = 1; seq <= 5; seq++) ws.push({seq, type: "event", data: {n: seq}});
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(8, "tok-8"));
    assert.deepEqual(FakeSocket.all[1].sent, [{type: "resume", token: "tok-7", last_seq: 5}]);
    // The host came back two frames short of what the client saw.
    FakeSocket.all[1].push({type: "resumed", player: 7, game: "tictactoe", room: "r1", version: "1.0.0", resume: "tok-7b", replayed: 0, lost: 0, rewound: 2});
    FakeSocket.all[1].drop();
    await until(() => FakeSocket.all[2]?.readyState === 1, "third socket");
    FakeSocket.all[2].push(welcome(9, "tok-9"));
    assert.deepEqual(FakeSocket.all[2].sent, [{type: "resume", token: "tok-7b", last_seq: 3}], "frame 3 is the last the host still has");
    client.close();
  });

  test("when the resume fails it rejoins the same room and reports the lost seat", async () => {
    const {client, seen, ws} = await joinedClient();
    const waiting = client.request({action: "move", cell: 1});
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(12, "tok-12"));
    ws2.push({type: "error", code: "resume_failed", message: "grace period over"});
    await assert.rejects(waiting, (e) => e.code === "seat_lost");
    const lost = seen.filter(([t]) => t === "seatlost").map(([, s]) => s);
    assert.deepEqual(lost, [{game: "tictactoe", room: "r1", code: "resume_failed", message: "grace period over"}]);
    const join = ws2.last("join");
    assert.deepEqual(join, {type: "join", game: "tictactoe", room: "r1", name: "ann", ref: join.ref});
    assert.equal(client.player, 12);
    ws2.push({type: "joined", game: "tictactoe", room: "r1", player: 12, version: "1.0.0", ref: join.ref});
    assert.equal(client.room.room, "r1");
    assert.equal(seen.filter(([t]) => t === "error").length, 0, "resume_failed is handled, not an app error");

    // The new seat's token is the one resumed next time.
    ws2.drop();
    await until(() => FakeSocket.all[2]?.readyState === 1, "third socket");
    FakeSocket.all[2].push(welcome(13, "tok-13"));
    assert.deepEqual(FakeSocket.all[2].sent, [{type: "resume", token: "tok-12", last_seq: 0}]);
    client.close();
  });

  test("without a room, a reconnect does not resume", async () => {
    const {client} = makeClient();
    client.connect();
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    FakeSocket.all[0].push(welcome(1, "t1"));
    FakeSocket.all[0].drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(2, "t2"));
    assert.deepEqual(FakeSocket.all[1].sent, []);
    assert.equal(client.player, 2);
    assert.equal(client.state, "connected");
    client.close();
  });

  test("close() stops reconnecting; kicked leaves the room but keeps the connection", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "kicked", reason: "afk"});
    assert.equal(client.room, null);
    assert.equal(client.state, "connected");
    assert.equal(seen.filter(([t]) => t === "kicked").length, 1);
    client.close();
    assert.ok(ws.closedByClient);
    await tick(20);
    assert.equal(FakeSocket.all.length, 1, "no reconnect after close()");
    assert.equal(client.state, "closed");
  });

  test("an operator's system message is an event; a closed room is left and not rejoined", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "system", message: "restart in 5 minutes"});
    assert.deepEqual(seen.filter(([t]) => t === "system").map(([, f]) => f.message), ["restart in 5 minutes"]);
    assert.notEqual(client.room, null, "a system message leaves the player in the room");
    ws.push({seq: 4, type: "closed", reason: "maintenance"});
    assert.equal(client.room, null);
    assert.equal(client.state, "connected");
    assert.deepEqual(seen.filter(([t]) => t === "closed").map(([, f]) => f.reason), ["maintenance"]);
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(8, "tok-8"));
    assert.deepEqual(FakeSocket.all[1].sent, [], "after closed: no resume, no rejoin");
    client.close();
  });

  test("superseded reconnects at once, and leaves the seat to the connection that took it", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "error", code: "superseded", message: "another connection resumed this seat"});
    assert.equal(client.state, "reconnecting");
    assert.equal(client.room, null);
    assert.deepEqual(seen.filter(([t]) => t === "error").map(([, e]) => e.code), ["superseded"]);
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(8, "tok-8"));
    assert.deepEqual(FakeSocket.all[1].sent, [], "neither resumes nor rejoins: that would take the seat back");
    assert.equal(client.state, "connected");
    client.close();
  });

  test("backoff grows while connections fail and resets after a welcome", async () => {
    const {client, seen} = makeClient({random: () => 1, backoff: {baseMs: 4, maxMs: 16}});
    client.connect();
    for (let i = 0; i < 4; i++) {
      await until(() => FakeSocket.all[i]?.readyState === 1, `socket ${i}`);
      FakeSocket.all[i].drop();
    }
    const delays = () => seen.filter(([t]) => t === "retry").map(([, r]) => r.delayMs);
    assert.deepEqual(delays(), [4, 8, 16, 16]);
    await until(() => FakeSocket.all[4]?.readyState === 1, "socket 4");
    FakeSocket.all[4].push(welcome(1, "t"));
    FakeSocket.all[4].drop();
    assert.equal(delays().at(-1), 4, "reset after a successful connection");
    client.close();
  });

  test("pings every idle/3 and gives up a silent connection after idle_timeout_ms", async () => {
    const {client, seen} = makeClient();
    client.connect();
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    ws.push(welcome(1, "t1", {idle_timeout_ms: 150}));
    await until(() => ws.sent.some((f) => f.type === "ping"), "a ping", 1000);
    // The host answers nothing: the connection counts as dead.
    await until(() => FakeSocket.all.length === 2, "a reconnect", 1000);
    assert.ok(ws.closedByClient);
    assert.ok(seen.some(([t, s]) => t === "state" && s === "reconnecting"));
    client.close();
  });

  test("a connection that answers pings stays up", async () => {
    const {client} = makeClient();
    client.connect();
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    const answer = setInterval(() => {
      for (const f of ws.sent.splice(0)) if (f.type === "ping") ws.push({type: "pong"});
    }, 5);
    ws.push(welcome(1, "t1", {idle_timeout_ms: 150}));
    await tick(500);
    clearInterval(answer);
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(client.state, "connected");
    client.close();
  });

  test("swapped and restarted update the room's version", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "swapped", from: "1.0.0", version: "1.1.0"});
    assert.equal(client.room.version, "1.1.0");
    ws.push({type: "restarted", version: "1.1.1", reason: "trap"});
    assert.equal(client.room.version, "1.1.1");
    assert.deepEqual(seen.filter(([t]) => t === "swapped" || t === "restarted").map(([t]) => t), ["swapped", "restarted"]);
    client.close();
  });

  test("guest_restarted fails the message but keeps the room", async () => {
    const {client, ws, seen} = await joinedClient();
    const failing = client.request({do: "panic"});
    ws.push({type: "restarted", version: "1.0.0", reason: "trap"});
    ws.push({type: "error", code: "guest_restarted", message: "the room restarted without it", ref: ws.last("message").ref});
    await assert.rejects(failing, (e) => e.code === "guest_restarted");
    assert.equal(client.room?.room, "r1");
    assert.equal(seen.filter(([t]) => t === "error").length, 0);
    client.close();
  });

  test("guest_fault without a restart means the room closed", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "event", data: {}});
    ws.push({type: "error", code: "guest_fault", message: "the room closed"});
    assert.equal(client.room, null);
    assert.equal(client.joining, false);
    assert.equal(seen.filter(([t]) => t === "error")[0][1].code, "guest_fault");
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(2, "t2"));
    assert.deepEqual(FakeSocket.all[1].sent, [], "nothing to resume or rejoin");
    client.close();
  });

  test("leave sends leave and resolves on left; the next drop does not resume", async () => {
    const {client, ws} = await joinedClient();
    const leaving = client.leave();
    const leave = ws.last("leave");
    ws.push({type: "left", ref: leave.ref});
    await leaving;
    assert.equal(client.room, null);
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(3, "t3"));
    assert.deepEqual(FakeSocket.all[1].sent, []);
    client.close();
  });
});

describe("RespawnClient in a fleet", () => {
  const elsewhere = (ws, ref) => ({type: "error", code: "room_elsewhere", message: "the room lives on node b", node: {id: "b", ws, tcp: "10.0.0.2:7701"}, ...(ref === undefined ? {} : {ref})});

  test("a join answered room_elsewhere is sent again on the node named; a later drop starts from the entry point", async () => {
    const {client, states} = makeClient();
    const joining = client.join("tictactoe", "r1", "ann");
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const a = FakeSocket.all[0];
    a.push(welcome(1, "t1"));
    a.push(elsewhere("ws://b/", a.last("join").ref));
    assert.ok(a.closedByClient, "the entry node's socket is closed");
    await until(() => FakeSocket.all[1]?.readyState === 1, "socket to b");
    const b = FakeSocket.all[1];
    assert.equal(b.url, "ws://b/");
    b.push(welcome(5, "t5"));
    const join = b.last("join");
    assert.deepEqual(join, {type: "join", game: "tictactoe", room: "r1", name: "ann", ref: join.ref});
    b.push({type: "joined", game: "tictactoe", room: "r1", player: 5, version: "1.0.0", ref: join.ref});
    assert.equal((await joining).player, 5);
    assert.equal(client.state, "connected");
    assert.deepEqual(states(), ["connecting", "connected", "reconnecting", "connected"]);
    // The owner dies: back to the entry point, which sends the resume on.
    b.drop();
    await until(() => FakeSocket.all[2]?.readyState === 1, "socket to the entry point");
    const entry = FakeSocket.all[2];
    assert.equal(entry.url, "ws://test/");
    entry.push(welcome(9, "t9"));
    assert.deepEqual(entry.sent, [{type: "resume", token: "t5", last_seq: 0}]);
    entry.push(elsewhere("ws://c/"));
    await until(() => FakeSocket.all[3]?.readyState === 1, "socket to c");
    const c = FakeSocket.all[3];
    assert.equal(c.url, "ws://c/");
    c.push(welcome(10, "t10"));
    assert.deepEqual(c.sent, [{type: "resume", token: "t5", last_seq: 0}], "the same seat, resumed where it lives now");
    c.push({type: "resumed", player: 5, game: "tictactoe", room: "r1", version: "1.0.0", resume: "t5b"});
    assert.equal(client.state, "connected");
    assert.deepEqual(client.room, {game: "tictactoe", room: "r1", version: "1.0.0"});
    client.close();
  });

  test("room_moved closes the connection; the resume goes through the entry point to the new owner", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.push({type: "error", code: "room_moved", message: "this node stopped serving the room"});
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "socket to the entry point");
    FakeSocket.all[1].push(welcome(8, "tok-8"));
    assert.deepEqual(FakeSocket.all[1].sent, [{type: "resume", token: "tok-7", last_seq: 0}]);
    FakeSocket.all[1].push(elsewhere("ws://b/"));
    await until(() => FakeSocket.all[2]?.readyState === 1, "socket to b");
    FakeSocket.all[2].push(welcome(9, "tok-9"));
    FakeSocket.all[2].push({type: "resumed", player: 7, game: "tictactoe", room: "r1", version: "1.0.0", resume: "tok-7b"});
    assert.equal(client.state, "connected");
    assert.equal(client.player, 7);
    assert.equal(seen.filter(([t]) => t === "seatlost").length, 0);
    client.close();
  });

  test("a resume refused with storage_unavailable (the room changing hands) is tried again from the entry point, backing off", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(8, "tok-8"));
    FakeSocket.all[1].push(elsewhere("ws://b/"));
    await until(() => FakeSocket.all[2]?.readyState === 1, "socket to b");
    assert.equal(FakeSocket.all[2].url, "ws://b/");
    FakeSocket.all[2].push(welcome(9, "tok-9"));
    FakeSocket.all[2].push({type: "error", code: "storage_unavailable", message: "the room is changing hands"});
    assert.equal(client.state, "reconnecting");
    await until(() => FakeSocket.all[3]?.readyState === 1, "fourth socket");
    assert.equal(FakeSocket.all[3].url, "ws://test/", "back to the entry point, not b");
    FakeSocket.all[3].push(welcome(10, "tok-10"));
    assert.deepEqual(FakeSocket.all[3].sent, [{type: "resume", token: "tok-7", last_seq: 0}]);
    FakeSocket.all[3].push({type: "error", code: "storage_unavailable", message: "the room is changing hands"});
    await until(() => FakeSocket.all[4]?.readyState === 1, "fifth socket");
    const attempts = seen.filter(([t]) => t === "retry").map(([, r]) => r.attempt);
    assert.deepEqual(attempts, [0, 1, 2], "no welcome resets the backoff while the resume is refused");
    FakeSocket.all[4].push(welcome(11, "tok-11"));
    FakeSocket.all[4].push({type: "resumed", player: 7, game: "tictactoe", room: "r1", version: "1.0.0", resume: "tok-7b"});
    assert.equal(client.state, "connected");
    client.close();
  });

  test("nodes that keep sending a join on make it fail with room_elsewhere after three hops", async () => {
    const {client} = makeClient();
    const joining = client.join("tictactoe", "r1", "ann");
    for (let i = 0; i < 4; i++) {
      await until(() => FakeSocket.all[i]?.readyState === 1, `socket ${i}`);
      const ws = FakeSocket.all[i];
      ws.push(welcome(i + 1, `t${i}`));
      ws.push(elsewhere(`ws://n${i}/`, ws.last("join").ref));
    }
    await assert.rejects(joining, (e) => e.code === "room_elsewhere" && e.frame.node.ws === "ws://n3/");
    assert.equal(FakeSocket.all.length, 4, "no fifth connection");
    assert.equal(FakeSocket.all[3].url, "ws://n2/");
    // The next join starts counting afresh.
    const again = client.join("tictactoe", "r2", "ann");
    const last = FakeSocket.all[3];
    last.push(elsewhere("ws://b/", last.last("join").ref));
    await until(() => FakeSocket.all[4]?.readyState === 1, "socket to b");
    assert.equal(FakeSocket.all[4].url, "ws://b/");
    FakeSocket.all[4].push(welcome(9, "t9"));
    FakeSocket.all[4].push({type: "joined", game: "tictactoe", room: "r2", player: 9, version: "1", ref: FakeSocket.all[4].last("join").ref});
    assert.equal((await again).room, "r2");
    client.close();
  });
});

describe("RespawnClient leave", () => {
  test("a leave made while disconnected resumes the seat only to leave it", async () => {
    const {client, ws, seen} = await joinedClient();
    ws.drop();
    const leaving = client.leave();
    await assert.rejects(client.join("tictactoe", "r2", "ann"), (e) => e.code === "leaving");
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(8, "tok-8"));
    assert.deepEqual(ws2.sent, [{type: "resume", token: "tok-7", last_seq: 0}]);
    ws2.push({type: "resumed", player: 7, game: "tictactoe", room: "r1", version: "1.0.0", resume: "tok-7b"});
    const leave = ws2.last("leave");
    assert.ok(leave, "leave sent after the resume");
    assert.equal(client.room, null);
    assert.equal(seen.filter(([t]) => t === "resumed").length, 0, "the app left; no resumed for it");
    ws2.push({type: "left", ref: leave.ref});
    await leaving;
    const joining = client.join("tictactoe", "r2", "ann");
    const join = ws2.last("join");
    assert.equal(join.room, "r2");
    ws2.push({type: "joined", game: "tictactoe", room: "r2", player: 7, version: "1.0.0", ref: join.ref});
    assert.equal((await joining).room, "r2");
    client.close();
  });
});

describe("RespawnClient tickets", () => {
  /** A client with `ticket`, joining r1 as ann; returns once the join went out. */
  async function joinWithTicket(ticket, name = "ann") {
    const c = makeClient({ticket});
    const joining = c.client.join("tictactoe", "r1", name);
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    ws.push(welcome(7, "tok-7"));
    await until(() => ws.last("join"), "the join");
    return {...c, ws, joining};
  }

  test("a ticket string goes with the join; the name may be left out", async () => {
    const {client, seen, ws, joining} = await joinWithTicket("a.b.c", null);
    const join = ws.last("join");
    assert.deepEqual(join, {type: "join", game: "tictactoe", room: "r1", ticket: "a.b.c", ref: join.ref});
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", user: "u-ann", name: "Ann", ref: join.ref});
    assert.equal((await joining).user, "u-ann");
    assert.equal(client.user, "u-ann");
    assert.equal(seen.filter(([t]) => t === "joined").length, 1);
    client.close();
  });

  test("a joined without user means no verified identity", async () => {
    const {client} = await joinedClient({ticket: "a.b.c"});
    assert.equal(client.user, null);
    client.close();
  });

  test("a sync ticket function is asked before every join, with the room wanted", async () => {
    const asked = [];
    const {client, ws, joining} = await joinWithTicket((want) => {
      asked.push(want);
      return `t${asked.length}`;
    });
    assert.deepEqual(asked, [{game: "tictactoe", room: "r1", name: "ann"}]);
    const first = ws.last("join");
    assert.deepEqual(first, {type: "join", game: "tictactoe", room: "r1", name: "ann", ticket: "t1", ref: first.ref});
    ws.push({type: "error", code: "ticket_expired", message: "the ticket expired", ref: first.ref});
    await assert.rejects(joining, (e) => e.code === "ticket_expired");
    assert.equal(client.joining, false);

    const again = client.join("tictactoe", "r2", "ann");
    const second = ws.last("join");
    assert.equal(second.ticket, "t2", "a fresh ticket for the second join");
    assert.deepEqual(asked.at(-1), {game: "tictactoe", room: "r2", name: "ann"});
    ws.push({type: "joined", game: "tictactoe", room: "r2", player: 7, version: "1.0.0", user: "u-ann", ref: second.ref});
    assert.equal((await again).room, "r2");
    client.close();
  });

  test("an async ticket function is asked again for the rejoin after resume_failed, not for the resume", async () => {
    let calls = 0;
    const ticket = async () => {
      calls++;
      await tick(5);
      return `t${calls}`;
    };
    const {client, seen, ws, joining} = await joinWithTicket(ticket);
    const join = ws.last("join");
    assert.equal(join.ticket, "t1");
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", user: "u-ann", ref: join.ref});
    await joining;

    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(12, "tok-12"));
    assert.deepEqual(ws2.sent, [{type: "resume", token: "tok-7", last_seq: 0}], "a resume needs no ticket");
    assert.equal(calls, 1);

    ws2.push({type: "error", code: "resume_failed", message: "grace period over"});
    assert.equal(seen.filter(([t]) => t === "seatlost").length, 1);
    // Sent while the ticket is on its way: it waits behind the join.
    client.send({action: "hello"});
    assert.equal(ws2.last("message"), undefined);
    await until(() => ws2.last("join"), "the rejoin");
    assert.equal(calls, 2);
    const rejoin = ws2.last("join");
    assert.deepEqual(rejoin, {type: "join", game: "tictactoe", room: "r1", name: "ann", ticket: "t2", ref: rejoin.ref});
    assert.equal(ws2.last("message"), undefined, "nothing goes out before the join is answered");
    ws2.push({type: "joined", game: "tictactoe", room: "r1", player: 12, version: "1.0.0", user: "u-ann", ref: rejoin.ref});
    assert.deepEqual(ws2.sent.at(-1), {type: "message", data: {action: "hello"}});
    assert.equal(client.room.room, "r1");
    assert.equal(seen.filter(([t]) => t === "error").length, 0);
    client.close();
  });

  test("a ticket function that throws fails the join instead of hanging; the client stays usable", async () => {
    const {client} = makeClient({
      ticket: () => {
        throw new Error("account service down");
      },
    });
    const joining = client.join("tictactoe", "r1", "ann");
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    ws.push(welcome(7, "tok-7"));
    await assert.rejects(joining, (e) => e.code === "ticket_unavailable" && /account service down/.test(e.message) && e.cause.message === "account service down");
    assert.equal(ws.last("join"), undefined);
    assert.equal(client.joining, false);

    client.ticket = async () => {
      throw new Error("401 from /ticket");
    };
    await assert.rejects(client.join("tictactoe", "r1", "ann"), (e) => e.code === "ticket_unavailable" && /401/.test(e.message));
    assert.equal(ws.last("join"), undefined);

    client.ticket = async () => "fine";
    const ok = client.join("tictactoe", "r1", "ann");
    await until(() => ws.last("join"), "the join");
    assert.equal(ws.last("join").ticket, "fine");
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", ref: ws.last("join").ref});
    assert.equal((await ok).game, "tictactoe");
    client.close();
  });

  test("a ticket that never comes fails the join after requestTimeoutMs", async () => {
    const {client} = makeClient({ticket: () => new Promise(() => {}), requestTimeoutMs: 30});
    const joining = client.join("tictactoe", "r1", "ann");
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    FakeSocket.all[0].push(welcome(7, "tok-7"));
    await assert.rejects(joining, (e) => e.code === "ticket_unavailable" && /within 30 ms/.test(e.message));
    assert.equal(FakeSocket.all[0].last("join"), undefined);
    client.close();
  });

  test("a ticket that fails for the rejoin after a lost seat is reported as an error", async () => {
    let calls = 0;
    const {client, seen, ws, joining} = await joinWithTicket(async () => {
      if (++calls > 1) throw new Error("signed out");
      return "t1";
    });
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", ref: ws.last("join").ref});
    await joining;
    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(12, "tok-12"));
    ws2.push({type: "error", code: "resume_failed", message: "grace period over"});
    await until(() => seen.some(([t]) => t === "error"), "the error");
    const [err] = seen.filter(([t]) => t === "error").map(([, e]) => e);
    assert.equal(err.code, "ticket_unavailable");
    assert.equal(client.joining, false);
    assert.equal(client.room, null);
    assert.equal(ws2.last("join"), undefined);
    client.close();
  });

  test("a ticket that arrives after a leave or a drop is not used", async () => {
    const gate = [];
    const ticket = () => new Promise((resolve) => gate.push(resolve));
    const {client} = makeClient({ticket});
    const first = client.join("tictactoe", "r1", "ann");
    await until(() => FakeSocket.all[0]?.readyState === 1, "socket open");
    const ws = FakeSocket.all[0];
    ws.push(welcome(7, "tok-7"));
    assert.equal(gate.length, 1);
    await client.leave();
    await assert.rejects(first, (e) => e.code === "left");
    gate[0]("late");
    await tick(5);
    assert.equal(ws.last("join"), undefined, "no join after the leave");

    const second = client.join("tictactoe", "r2", "ann");
    assert.equal(gate.length, 2, "asked again for the new join");
    ws.drop();
    gate[1]("stale");
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    const ws2 = FakeSocket.all[1];
    ws2.push(welcome(8, "tok-8"));
    assert.deepEqual(ws2.sent, [], "the join sent nothing before the drop: nothing to resume");
    assert.equal(gate.length, 3, "the new connection asks for a ticket again");
    gate[2]("fresh");
    await until(() => ws2.last("join"), "the join");
    assert.equal(ws2.last("join").ticket, "fresh");
    assert.equal(ws.last("join"), undefined);
    ws2.push({type: "joined", game: "tictactoe", room: "r2", player: 8, version: "1.0.0", ref: ws2.last("join").ref});
    assert.equal((await second).room, "r2");
    client.close();
  });

  test("a resumed answering the join took over the user's seat: adopted like a joined", async () => {
    const {client, seen, ws, joining} = await joinWithTicket("a.b.c");
    const join = ws.last("join");
    ws.push({type: "resumed", player: 3, game: "tictactoe", room: "r1", version: "1.0.0", resume: "tok-3b", replayed: 2, lost: 0, ref: join.ref});
    const joined = await joining;
    assert.equal(joined.type, "joined");
    assert.equal(joined.takeover, true);
    assert.equal(joined.player, 3);
    assert.equal(client.player, 3);
    assert.deepEqual(client.room, {game: "tictactoe", room: "r1", version: "1.0.0"});
    assert.deepEqual(seen.filter(([t]) => t === "joined" || t === "resumed").map(([t, f]) => [t, f.takeover]), [["joined", true]]);
    assert.equal(client.state, "connected");
    // The seat's kept frames follow, numbered on from the seat's count.
    ws.push({seq: 4, type: "event", data: {board: []}});
    ws.push({seq: 5, type: "event", data: {board: [1]}});
    client.send({action: "move", cell: 2});
    assert.deepEqual(ws.sent.at(-1), {type: "message", data: {action: "move", cell: 2}});

    ws.drop();
    await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
    FakeSocket.all[1].push(welcome(9, "tok-9"));
    assert.deepEqual(FakeSocket.all[1].sent, [{type: "resume", token: "tok-3b", last_seq: 5}], "resumes the taken-over seat");
    client.close();
  });

  test("a resumed for another ref is not taken for the join", async () => {
    const {client, ws, joining} = await joinWithTicket("a.b.c");
    const join = ws.last("join");
    ws.push({type: "resumed", player: 3, game: "tictactoe", room: "r1", version: "1.0.0", resume: "x", replayed: 0, lost: 0, ref: join.ref + 100});
    assert.equal(client.room, null);
    ws.push({type: "joined", game: "tictactoe", room: "r1", player: 7, version: "1.0.0", ref: join.ref});
    assert.equal((await joining).player, 7);
    client.close();
  });

  test("banned on a join rejects it; banned or kicked in a room is not rejoined", async () => {
    const refused = await joinWithTicket("a.b.c");
    refused.ws.push({type: "error", code: "banned", message: "banned until tomorrow", ref: refused.ws.last("join").ref});
    await assert.rejects(refused.joining, (e) => e.code === "banned" && /tomorrow/.test(e.message));
    refused.client.close();

    for (const last of [{type: "kicked", reason: "banned: cheating"}, {type: "error", code: "banned", message: "banned: cheating"}]) {
      const {client, ws} = await joinedClient({ticket: "a.b.c"});
      ws.push(last);
      assert.equal(client.room, null, last.type);
      assert.equal(client.joining, false, last.type);
      ws.drop();
      await until(() => FakeSocket.all[1]?.readyState === 1, "second socket");
      FakeSocket.all[1].push(welcome(8, "tok-8"));
      assert.deepEqual(FakeSocket.all[1].sent, [], `after ${last.type}: no resume, no rejoin`);
      client.close();
    }
  });
});
