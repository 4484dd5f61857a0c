// The demo site in a real browser against a real host: two pages play
// tictactoe through a TCP proxy that can cut their connections, while the
// host hot-swaps the game under them; and against a second host with TLS
// and join tickets, over https and wss.
//
// Needs target/debug/respawn and target/guests/tictactoe.wasm (`just
// guests`), Debian's chromium (`apt-get install chromium`; playwright
// never downloads a browser here) and the test certificate in
// tests/fixtures/tls.
//
// RESPAWN_WEB=disk serves host/web and clients/js from the work tree
// instead of the copies built into the binary (for editing the site
// without rebuilding the host); /config.json still comes from the host.
import {test, before, after, describe} from "node:test";
import assert from "node:assert/strict";
import {spawn, execFileSync} from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import {fileURLToPath} from "node:url";
import {chromium} from "playwright-core";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BIN = path.join(ROOT, "target/debug/respawn");
const WASM = path.join(ROOT, "target/guests/tictactoe.wasm");
const CHAT_WASM = path.join(ROOT, "target/guests/chat.wasm");
const JS_WASM = path.join(ROOT, "target/guests/tictactoe-js.wasm");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(ROOT, "target/browser-artifacts");
/** For localhost and 127.0.0.1, signed by the test CA in ca.pem. */
const TLS_CERT = path.join(ROOT, "tests/fixtures/tls/cert.pem");
const TLS_KEY = path.join(ROOT, "tests/fixtures/tls/key.pem");
const TLS_CA = path.join(ROOT, "tests/fixtures/tls/ca.pem");
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const SITE_FILES = {
  "/": ["host/web/index.html", "text/html; charset=utf-8"],
  "/app.js": ["host/web/app.js", "text/javascript; charset=utf-8"],
  "/style.css": ["host/web/style.css", "text/css; charset=utf-8"],
  "/respawn.js": ["clients/js/respawn.js", "text/javascript; charset=utf-8"],
};
/** How long one step (a move, a swap, a reconnect) may take. */
const STEP_MS = 15_000;

let tmp;
let host;
let proxy;
let site;
let browser;
/** Where `openPlayer` sends pages by default: the plain host, through the proxy. */
let plain;

// --- the host ---------------------------------------------------------------

/**
 * Writes `<dir>/respawn.toml` for a host on free loopback ports with its
 * modules and state under `dir`, trusting the suite's key (in `tmp`), plus
 * `extra` TOML; returns its path.
 */
function writeConfig(dir, extra = "") {
  const config = path.join(dir, "respawn.toml");
  fs.writeFileSync(
    config,
    `[net]
ws = "127.0.0.1:0"
tcp = "127.0.0.1:0"
web = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[modules]
dir = "${path.join(dir, "modules")}"
[trust]
dir = "${path.join(tmp, "trust")}"
[state]
dir = "${path.join(dir, "state")}"
${extra}`,
  );
  return config;
}

function run(args) {
  return execFileSync(BIN, args, {cwd: tmp, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"]});
}

/** Starts `respawn serve -c config`; its log goes to target/browser-artifacts/`name`.log. */
function startHost(config, name = "host") {
  const logFile = fs.createWriteStream(path.join(ARTIFACTS, `${name}.log`));
  const hostLog = [];
  const child = spawn(BIN, ["serve", "-c", config], {
    cwd: path.dirname(config),
    stdio: ["ignore", "pipe", "pipe"],
    env: {...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG ?? "info,cranelift=warn,wasmtime=warn"},
  });
  const keep = (line) => {
    logFile.write(line + "\n");
    hostLog.push(line);
    if (hostLog.length > 200) hostLog.shift();
  };
  readline.createInterface({input: child.stderr}).on("line", keep);
  const listening = {};
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error("the host printed no `listening ws` and `listening web` within 20 s")), 20_000);
    const fail = (err) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      err.message += `\n--- host log ---\n${hostLog.slice(-40).join("\n")}`;
      reject(err);
    };
    child.on("exit", (code, signal) => fail(new Error(`the host exited (${signal ?? code}) before listening`)));
    readline.createInterface({input: child.stdout}).on("line", (line) => {
      keep(`[stdout] ${line}`);
      const m = /^listening (\w+) (\S+):(\d+)$/.exec(line.trim());
      if (!m) return;
      listening[m[1]] = Number(m[3]);
      if (listening.ws && listening.web) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.on("exit", (code, signal) => keep(`[host exited: ${signal ?? code}]`));
        resolve({child, ports: listening, logFile, log: hostLog});
      }
    });
  });
}

async function stopHost(host) {
  if (!host) return;
  const {child, logFile} = host;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }
  logFile.end();
}

// --- a TCP proxy that can cut every connection ------------------------------

function startProxy(targetPort) {
  const sockets = new Set();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const done = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on("error", done);
      s.on("close", done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        /** Destroys every proxied socket, both sides. */
        cut() {
          for (const s of sockets) s.destroy();
          sockets.clear();
        },
        /** While blocked, new connections are accepted and dropped at once. */
        block(on) {
          blocked = on;
        },
        close() {
          this.cut();
          return new Promise((r) => server.close(r));
        },
      }),
    );
  });
}

/** GETs `url`; over https it trusts the test CA. */
function get(url) {
  const tls = url.startsWith("https:");
  return new Promise((resolve, reject) => {
    (tls ? https : http)
      .get(url, tls ? {ca: fs.readFileSync(TLS_CA)} : {}, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => resolve({status: res.statusCode, text, json: () => JSON.parse(text)}));
      })
      .on("error", reject);
  });
}

// --- the site from the work tree (RESPAWN_WEB=disk) -------------------------

/** Serves the site's files from disk and the host's own routes from `hostBase`; over TLS when `tls` has `{cert, key}`. */
function startDiskSite(hostBase, tls = null) {
  const handler = async (req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/config.json" || url.pathname === "/dev/ticket") {
      const upstream = await get(hostBase + url.pathname + url.search);
      res.writeHead(upstream.status, {"content-type": "application/json"});
      res.end(upstream.text);
      return;
    }
    const file = SITE_FILES[url.pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {"content-type": file[1], "cache-control": "no-cache"});
    res.end(fs.readFileSync(path.join(ROOT, file[0])));
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** The site of a host with web port `webPort`: the host's own, or from disk under RESPAWN_WEB=disk. */
async function siteOf(webPort, tls = null) {
  const scheme = tls ? "https" : "http";
  const hostBase = `${scheme}://127.0.0.1:${webPort}`;
  if (process.env.RESPAWN_WEB === "disk") {
    const server = await startDiskSite(hostBase, tls);
    return {server, base: `${scheme}://127.0.0.1:${server.address().port}`};
  }
  await checkSiteIsCurrent(hostBase);
  return {server: null, base: hostBase};
}

/** Refuses to test a binary whose built-in site is older than the files. */
async function checkSiteIsCurrent(base) {
  for (const [route, [file]] of Object.entries(SITE_FILES)) {
    const res = await get(base + route);
    assert.equal(res.status, 200, `GET ${route} from the host`);
    const served = res.text;
    if (served !== fs.readFileSync(path.join(ROOT, file), "utf8")) {
      throw new Error(
        `${BIN} serves a different ${file} than the work tree: rebuild the host ` +
          "(cargo build -p respawn), or run with RESPAWN_WEB=disk to serve the files from disk",
      );
    }
  }
}

// --- pages ------------------------------------------------------------------

const opened = [];

/**
 * A page in a context of its own on `via`'s browser (`via`: `{browser,
 * base, ws, context}`; `ws` null lets the page pick it from /config.json).
 */
async function newPage(via, label) {
  const context = await via.browser.newContext({viewport: {width: 1000, height: 640}, ...via.context});
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.sockets = [];
  page.on("websocket", (ws) => page.sockets.push(ws.url()));
  page.label = label;
  opened.push(page);
  return page;
}

/** Opens the site of `via` and joins `room` as `name`. */
async function openPlayer(room, name, game = "tictactoe", via = plain) {
  const page = await newPage(via, name);
  const q = new URLSearchParams({...(via.ws ? {ws: via.ws} : {}), game, room, name, autojoin: "1"});
  await page.goto(`${via.base}/?${q}`);
  await waitText(page, "#state", "connected");
  return page;
}

function waitFor(page, fn, arg, what) {
  return page.waitForFunction(fn, arg, {timeout: STEP_MS, polling: 50}).catch((e) => {
    throw new Error(`${page.label}: timed out waiting for ${what}`, {cause: e});
  });
}

function waitText(page, sel, text) {
  return waitFor(
    page,
    ([sel, text]) => document.querySelector(sel)?.textContent.trim() === text,
    [sel, text],
    `${sel} = "${text}"`,
  );
}

function waitAttr(page, sel, attrs) {
  return waitFor(
    page,
    ([sel, attrs]) => {
      const el = document.querySelector(sel);
      return el && Object.entries(attrs).every(([k, v]) => el.dataset[k] === v);
    },
    [sel, attrs],
    `${sel} with ${JSON.stringify(attrs)}`,
  );
}

const board = (page) => page.$$eval("#board .cell", (cells) => cells.map((c) => c.textContent.trim()));
const text = (page, sel) => page.$eval(sel, (el) => el.textContent.trim());

/** Two players in a fresh room: the first page is X, the second O. */
async function pair(room, via = plain) {
  const x = await openPlayer(room, "xena", "tictactoe", via);
  await waitAttr(x, "#status", {mark: "X"});
  const o = await openPlayer(room, "otto", "tictactoe", via);
  await waitAttr(o, "#status", {mark: "O"});
  for (const p of [x, o]) await waitAttr(p, "#status", {status: "playing", turn: "X"});
  return {X: x, O: o};
}

/** Plays `cells` in turn, X first, by clicking, and waits until both boards show each move. */
async function play(players, cells, first = "X") {
  let mark = first;
  for (const i of cells) {
    await players[mark].click(`.cell[data-i="${i}"]`);
    for (const p of [players.X, players.O]) await waitAttr(p, `.cell[data-i="${i}"]`, {mark});
    mark = mark === "X" ? "O" : "X";
  }
}

async function expectXWon(players) {
  for (const p of [players.X, players.O]) await waitAttr(p, "#status", {status: "won", winner: "X"});
  assert.deepEqual(await board(players.X), await board(players.O), "both boards agree");
  assert.match(await text(players.X, "#status"), /^X wins — you won/);
  assert.match(await text(players.O, "#status"), /^X wins — you lost/);
}

async function shot(page, name) {
  await page.screenshot({path: path.join(ARTIFACTS, `${name}.png`)});
}

/** Runs a test body; on failure saves a screenshot and the log of every open page and the host's. */
async function scenario(name, body, on = host) {
  try {
    await body();
    for (const p of opened) assert.deepEqual(p.errors, [], `${p.label}: uncaught errors in the page`);
  } catch (e) {
    const notes = [];
    for (const p of opened) {
      await shot(p, `FAILED-${name}-${p.label}`).catch(() => {});
      const log = await p.$$eval("#log li", (lis) => lis.map((li) => li.textContent).reverse()).catch(() => []);
      notes.push(`--- ${p.label}: state=${await text(p, "#state").catch(() => "?")} log:\n${log.join("\n")}`);
    }
    notes.push(`--- host log (tail) ---\n${on.log.slice(-30).join("\n")}`);
    e.message += `\n${notes.join("\n")}`;
    throw e;
  } finally {
    for (const p of opened.splice(0)) await p.context().close().catch(() => {});
  }
}

// --- setup ------------------------------------------------------------------

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM to a Chromium binary)`);
  }
  for (const [file, how] of [
    [BIN, "cargo build -p respawn"],
    [WASM, "just guests"],
    [CHAT_WASM, "just guests"],
    [JS_WASM, "just guests"],
  ]) {
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run \`${how}\` first`);
  }
  fs.mkdirSync(ARTIFACTS, {recursive: true});
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "respawn-browser-"));
  for (const dir of ["modules", "trust", "state"]) fs.mkdirSync(path.join(tmp, dir));
  run(["keygen", "--out", path.join(tmp, "key"), "--comment", "test"]);
  fs.copyFileSync(path.join(tmp, "key.pub"), path.join(tmp, "trust/key.pub"));
  run(["sign", WASM, "--key", path.join(tmp, "key.key"), "--name", "tictactoe", "--version", "1.0.0", "-o", path.join(tmp, "modules/tictactoe.wasm")]);
  run(["sign", CHAT_WASM, "--key", path.join(tmp, "key.key"), "--name", "chat", "--version", "1.0.0", "-o", path.join(tmp, "modules/chat.wasm")]);
  host = await startHost(writeConfig(tmp));
  proxy = await startProxy(host.ports.ws);
  const {server, base} = await siteOf(host.ports.web);
  site = server;
  const config = (await get(`${base}/config.json`)).json();
  const games = [...config.games].sort((a, b) => a.name.localeCompare(b.name));
  assert.deepEqual(games, [{name: "chat", version: "1.0.0"}, {name: "tictactoe", version: "1.0.0"}], "config.json lists the signed games");
  assert.equal(config.ws_port, host.ports.ws, "config.json names the ws port");
  assert.equal(config.tls, false, "config.json: no TLS");
  assert.equal(config.auth?.required, false, "config.json: no tickets needed");
  browser = await chromium.launch({executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 20_000});
  plain = {browser, base, ws: `ws://127.0.0.1:${proxy.port}/`, context: {}};
});

after(async () => {
  await browser?.close().catch(() => {});
  await proxy?.close();
  site?.close();
  await stopHost(host);
  if (tmp) fs.rmSync(tmp, {recursive: true, force: true});
});

process.on("exit", () => host?.child.kill("SIGKILL"));

// --- tests ------------------------------------------------------------------

describe("demo site", {timeout: 300_000}, () => {
  test("two pages play tictactoe to a win by clicking", {timeout: 45_000}, () =>
    scenario("play", async () => {
      const players = await pair("play-1");
      for (const p of [players.X, players.O]) assert.equal(await text(p, "#version"), "1.0.0");
      for (const p of [players.X, players.O]) {
        assert.ok(await p.$eval("#userinfo", (el) => el.hidden), `${p.label}: no user without a ticket`);
        assert.ok(p.sockets.every((url) => url.startsWith("ws:")), `${p.label}: plain ws: ${p.sockets}`);
      }
      await shot(players.X, "a-start-x");
      // X: 0 1 2 across the top; O: 3 4.
      await play(players, [0, 3, 1, 4, 2]);
      await expectXWon(players);
      assert.deepEqual(await board(players.X), ["X", "X", "X", "O", "O", "", "", "", ""]);
      await shot(players.X, "a-win-x");
      await shot(players.O, "a-win-o");
    }));

  test("a hot swap mid-game changes the version on both pages and keeps the board", {timeout: 45_000}, () =>
    scenario("swap", async () => {
      const players = await pair("swap-1");
      await play(players, [0, 3, 1]);
      const before = await board(players.X);
      await shot(players.X, "b-before-swap");

      const staging = path.join(tmp, "tictactoe-1.1.0.wasm.part");
      run(["sign", WASM, "--key", path.join(tmp, "key.key"), "--name", "tictactoe", "--version", "1.1.0", "-o", staging]);
      fs.renameSync(staging, path.join(tmp, "modules/tictactoe-1.1.0.wasm"));

      for (const p of [players.X, players.O]) await waitText(p, "#version", "1.1.0");
      for (const p of [players.X, players.O]) {
        assert.deepEqual(await board(p), before, `${p.label}: the board survived the swap`);
        assert.equal(await p.$eval("#status", (el) => el.dataset.turn), "O");
        const log = await p.$$eval("#log li", (lis) => lis.map((li) => li.textContent).join("\n"));
        assert.match(log, /hot swap: 1\.0\.0 → 1\.1\.0/);
      }
      await shot(players.O, "b-after-swap");
      await play(players, [4, 2], "O");
      await expectXWon(players);
      await shot(players.X, "b-win-after-swap");
    }));

  // From here on the page plays the JavaScript build of tictactoe: same
  // page, same messages, same board.
  test("the JavaScript tictactoe takes over a game mid-way and both pages play it to a win", {timeout: 120_000}, () =>
    scenario("javascript", async () => {
      const players = await pair("js-1");
      await play(players, [0, 3]);
      const before = await board(players.X);

      const staging = path.join(tmp, "tictactoe-2.0.0.wasm.part");
      run(["sign", JS_WASM, "--key", path.join(tmp, "key.key"), "--name", "tictactoe", "--version", "2.0.0", "-o", staging]);
      fs.renameSync(staging, path.join(tmp, "modules/tictactoe-2.0.0.wasm"));

      // Compiling a JavaScript engine takes seconds (tens on a busy machine).
      await players.X.waitForFunction(() => document.querySelector("#version")?.textContent.includes("2.0.0"), null, {timeout: 90_000, polling: 100});
      await waitText(players.O, "#version", "2.0.0");
      for (const p of [players.X, players.O]) {
        assert.deepEqual(await board(p), before, `${p.label}: the board survived the swap to JavaScript`);
        assert.equal(await p.$eval("#status", (el) => el.dataset.turn), "X");
      }
      await play(players, [1, 4, 2]);
      await expectXWon(players);
      await shot(players.X, "c-win-javascript");
    }));

  test("a cut connection reconnects, resumes the same seat, and the game goes on", {timeout: 45_000}, () =>
    scenario("resume", async () => {
      const players = await pair("resume-1");
      await play(players, [0, 3]);
      const ids = {X: await text(players.X, "#player"), O: await text(players.O, "#player")};
      const before = await board(players.X);
      for (const p of [players.X, players.O]) {
        await p.evaluate(() => {
          const el = document.querySelector("#state");
          window.stateHistory = [el.textContent];
          new MutationObserver(() => window.stateHistory.push(el.textContent)).observe(el, {
            childList: true,
            characterData: true,
            subtree: true,
          });
        });
      }

      proxy.block(true);
      proxy.cut();
      for (const p of [players.X, players.O]) await waitText(p, "#state", "reconnecting");
      await shot(players.X, "c-reconnecting");
      // A move made while cut off waits in the client and goes out after the resume.
      await players.X.click('.cell[data-i="1"]');
      await new Promise((r) => setTimeout(r, 1500));
      proxy.block(false);

      for (const p of [players.X, players.O]) await waitText(p, "#state", "connected");
      for (const p of [players.X, players.O]) {
        const history = await p.evaluate(() => window.stateHistory);
        const i = history.indexOf("reconnecting");
        assert.ok(i >= 0 && history.indexOf("connected", i) > i, `${p.label}: states went ${history.join(" → ")}`);
        const log = await p.$$eval("#log li", (lis) => lis.map((li) => li.textContent).join("\n"));
        assert.match(log, /resumed seat of player/, `${p.label}: resumed`);
        assert.doesNotMatch(log, /seat .* lost/, `${p.label}: no lost seat`);
      }
      assert.equal(await text(players.X, "#player"), ids.X, "X kept its player id");
      assert.equal(await text(players.O, "#player"), ids.O, "O kept its player id");
      for (const p of [players.X, players.O]) await waitAttr(p, '.cell[data-i="1"]', {mark: "X"});
      assert.deepEqual(await board(players.O), before.map((c, i) => (i === 1 ? "X" : c)), "same board plus the queued move");
      await waitAttr(players.X, "#status", {mark: "X"});
      await waitAttr(players.O, "#status", {mark: "O"});
      await shot(players.X, "c-resumed");

      await play(players, [4, 2], "O");
      await expectXWon(players);
      await shot(players.O, "c-win-after-resume");
    }));

  test("two pages chat: history, members, lines both ways", {timeout: 30_000}, () =>
    scenario("chat", async () => {
      const ann = await openPlayer("chat-1", "ann", "chat");
      await waitFor(ann, () => !document.querySelector("#chat").hidden, null, "the chat panel");
      await ann.fill("#text", "hello before bob");
      await ann.press("#text", "Enter");
      await waitFor(ann, () => document.querySelector("#messages").textContent.includes("hello before bob"), null, "ann's line");
      const bob = await openPlayer("chat-1", "bob", "chat");
      await waitFor(bob, () => document.querySelector("#messages").textContent.includes("ann hello before bob"), null, "history for bob");
      await waitFor(ann, () => document.querySelector("#messages").textContent.includes("bob joined"), null, "bob's arrival");
      await bob.fill("#text", "hi ann");
      await bob.click("#say button");
      for (const p of [ann, bob]) {
        await waitFor(p, () => document.querySelector("#messages").textContent.includes("bob hi ann"), null, "bob's line");
        assert.deepEqual(await p.$$eval("#members li", (lis) => lis.map((li) => li.textContent).sort()), ["ann", "bob"]);
      }
      assert.equal(await ann.inputValue("#text"), "", "the input clears once the line is accepted");
      await shot(bob, "d-chat");
      await bob.click("#leave");
      await waitFor(ann, () => document.querySelector("#messages").textContent.includes("bob left"), null, "bob's leave");
      assert.equal(await text(bob, "#state"), "connected");
    }));
});

describe("over wss with tickets", {timeout: 60_000}, () => {
  let tlsHost;
  let tlsSite;
  let tlsBrowser;
  /** The second host's site: https, and the page finds wss from /config.json. */
  let secure;

  before(async () => {
    for (const file of [TLS_CERT, TLS_KEY, TLS_CA]) if (!fs.existsSync(file)) throw new Error(`${file} is missing`);
    const dir = path.join(tmp, "tls");
    for (const sub of ["modules", "state"]) fs.mkdirSync(path.join(dir, sub), {recursive: true});
    // The 1.0.0 builds only: the swap test may have added 1.1.0 to the first host's.
    for (const game of ["tictactoe", "chat"]) {
      fs.copyFileSync(path.join(tmp, `modules/${game}.wasm`), path.join(dir, `modules/${game}.wasm`));
    }
    const config = writeConfig(dir, `[tls]
cert = "${TLS_CERT}"
key = "${TLS_KEY}"
[auth]
required = true
dev_issuer = true
issuer = "respawn-dev"
audience = "respawn"
`);
    tlsHost = await startHost(config, "host-tls");
    const tls = {cert: fs.readFileSync(TLS_CERT), key: fs.readFileSync(TLS_KEY)};
    const {server, base} = await siteOf(tlsHost.ports.web, tls);
    tlsSite = server;
    const served = (await get(`${base}/config.json`)).json();
    assert.equal(served.tls, true, "config.json: tls");
    assert.equal(served.auth?.required, true, "config.json: auth.required");
    assert.equal(served.auth?.dev_tickets, true, "config.json: auth.dev_tickets");
    assert.equal(served.ws_port, tlsHost.ports.ws);
    tlsBrowser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, "--ignore-certificate-errors"],
      timeout: 20_000,
    });
    secure = {browser: tlsBrowser, base, ws: null, context: {ignoreHTTPSErrors: true}};
  });

  after(async () => {
    await tlsBrowser?.close().catch(() => {});
    tlsSite?.close();
    await stopHost(tlsHost);
  });

  process.on("exit", () => tlsHost?.child.kill("SIGKILL"));

  test("two pages sign in with development tickets and play over https and wss", {timeout: 45_000}, () =>
    scenario(
      "tls",
      async () => {
        const players = await pair("tls-1", secure);
        for (const p of [players.X, players.O]) {
          assert.equal(await p.evaluate(() => location.protocol), "https:");
          const wss = `wss://127.0.0.1:${tlsHost.ports.ws}/`;
          assert.ok(p.sockets.length > 0 && p.sockets.every((url) => url === wss), `${p.label}: WebSockets ${p.sockets}, not ${wss}`);
          // The dev issuer names the user the same way for the same name.
          const ticket = (await get(`${secure.base}/dev/ticket?name=${p.label}`)).json();
          assert.ok(ticket.ticket && ticket.user && ticket.expires_in_ms > 0, JSON.stringify(ticket));
          await waitFor(p, () => !document.querySelector("#userinfo").hidden, null, "the user id");
          assert.equal(await text(p, "#user"), ticket.user, `${p.label}: the user id from the ticket`);
          assert.equal(await p.evaluate(() => window.respawn.user), ticket.user);
        }
        await shot(players.X, "e-tls-start-x");
        await play(players, [0, 3, 1, 4, 2]);
        await expectXWon(players);
        await shot(players.X, "e-tls-win-x");
      },
      tlsHost,
    ));

  test("a bad name gets no development ticket", async () => {
    const res = await get(`${secure.base}/dev/ticket?name=${encodeURIComponent(" ")}`);
    assert.equal(res.status, 400);
    assert.equal(typeof res.json().error, "string");
  });

  test("without a way to get tickets the page says so instead of joining", {timeout: 30_000}, () =>
    scenario(
      "signin",
      async () => {
        const page = await newPage(secure, "nina");
        // The host as if its development issuer were off.
        const served = (await get(`${secure.base}/config.json`)).json();
        await page.route("**/config.json", (route) => route.fulfill({json: {...served, auth: {required: true, dev_tickets: false}}}));
        const joins = [];
        page.on("websocket", (ws) => ws.on("framesent", (f) => typeof f.payload === "string" && f.payload.includes('"join"') && joins.push(f.payload)));
        await page.goto(`${secure.base}/?${new URLSearchParams({game: "tictactoe", room: "tls-2", name: "nina", autojoin: "1"})}`);
        await waitFor(page, () => !document.querySelector("#signin").hidden, null, "the sign-in notice");
        assert.match(await text(page, "#signin"), /requires sign-in tickets from your studio's account service/);
        assert.equal(await page.$eval("#join", (b) => b.disabled), true);
        await waitText(page, "#state", "connected");
        assert.deepEqual(joins, [], "no join sent");
        await shot(page, "f-signin");
      },
      tlsHost,
    ));
});
