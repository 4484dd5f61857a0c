// The demo page: pick a game and a room, play it, and watch what the host
// does underneath (swaps, restarts, resumes) in the log.
import {RespawnClient} from "/respawn.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

const ui = {
  state: $("#state"),
  server: $("#server"),
  lobby: $("#lobby"),
  game: $("#game"),
  room: $("#room"),
  name: $("#name"),
  join: $("#join"),
  leave: $("#leave"),
  roominfo: $("#roominfo"),
  where: $("#where"),
  version: $("#version"),
  player: $("#player"),
  userinfo: $("#userinfo"),
  user: $("#user"),
  signin: $("#signin"),
  idle: $("#idle"),
  log: $("#log"),
  panels: {tictactoe: $("#tictactoe"), chat: $("#chat"), raw: $("#raw")},
};

/** What the page is showing: the room's game, and per-game view state. */
const view = {game: null, mark: null, ttt: null, members: new Map()};

function log(text, kind = "info") {
  const li = document.createElement("li");
  li.className = kind;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, " ", text);
  ui.log.prepend(li);
  while (ui.log.children.length > 200) ui.log.lastChild.remove();
}

async function loadConfig() {
  try {
    const res = await fetch("/config.json", {cache: "no-store"});
    if (res.ok) return await res.json();
    log(`config.json: HTTP ${res.status}`, "error");
  } catch (e) {
    log(`config.json: ${e.message}`, "error");
  }
  return {ws_port: 7700, games: [{name: "tictactoe"}, {name: "chat"}], server: ""};
}

function wsUrl(config) {
  if (params.get("ws")) return params.get("ws");
  const scheme = config.tls || location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.hostname}:${config.ws_port ?? 7700}/`;
}

// --- join tickets ----------------------------------------------------------

/**
 * A short-lived ticket from the host's development issuer, fetched before
 * every join (the client asks again for each rejoin, so one never expires
 * on us). Real deployments get tickets from their own account service.
 */
async function devTicket({name}) {
  const res = await fetch(`/dev/ticket?name=${encodeURIComponent(name ?? "")}`, {cache: "no-store"});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? (res.status === 404 ? "the host's development ticket issuer is off" : `HTTP ${res.status}`));
  return body.ticket;
}

/** Without a way to get tickets the page cannot join: say so up front. */
function needSignIn() {
  ui.signin.hidden = false;
  ui.join.disabled = true;
}

// --- tictactoe -------------------------------------------------------------

const cells = [...document.querySelectorAll("#board .cell")];

function resetTictactoe() {
  view.mark = null;
  view.ttt = null;
  for (const c of cells) {
    c.textContent = "";
    c.className = "cell";
    delete c.dataset.mark;
    c.disabled = true;
  }
  setStatus("Waiting for an opponent", {status: "waiting"});
  $("#seat-x").textContent = "X: –";
  $("#seat-o").textContent = "O: –";
  $("#watchers").textContent = "0 watching";
  $("#restart").hidden = true;
}

function setStatus(text, data) {
  const el = $("#status");
  el.textContent = text;
  el.dataset.status = data.status ?? "";
  el.dataset.turn = data.turn ?? "";
  el.dataset.winner = data.winner ?? "";
  el.dataset.mark = view.mark ?? "";
}

function statusText(s) {
  const me = view.mark;
  const you = me && me !== "spectator" ? ` · you are ${me}` : " · you are watching";
  switch (s.status) {
    case "playing":
      return s.turn === me ? `${s.turn} to move — your turn${you}` : `${s.turn} to move${you}`;
    case "won":
      if (me === s.winner) return `${s.winner} wins — you won!`;
      if (me === "X" || me === "O") return `${s.winner} wins — you lost`;
      return `${s.winner} wins`;
    case "draw":
      return `Draw${you}`;
    default:
      return `Waiting for an opponent${you}`;
  }
}

function renderTictactoe() {
  const s = view.ttt;
  if (!s) return;
  const mine = s.status === "playing" && s.turn === view.mark;
  s.board.forEach((mark, i) => {
    const c = cells[i];
    c.textContent = mark ?? "";
    if (mark) c.dataset.mark = mark;
    else delete c.dataset.mark;
    c.classList.toggle("x", mark === "X");
    c.classList.toggle("o", mark === "O");
    c.classList.toggle("win", Boolean(s.line?.includes(i)));
    c.disabled = Boolean(mark) || !mine;
  });
  setStatus(statusText(s), s);
  $("#seat-x").textContent = `X: ${s.players?.X?.name ?? "–"}`;
  $("#seat-o").textContent = `O: ${s.players?.O?.name ?? "–"}`;
  $("#watchers").textContent = `${s.spectators ?? 0} watching`;
  $("#restart").hidden = !(["won", "draw"].includes(s.status) && ["X", "O"].includes(view.mark));
}

function onTictactoe(data) {
  if (data?.type === "seat") {
    view.mark = data.mark;
    if (view.ttt) renderTictactoe();
    else setStatus(statusText({status: "waiting"}), {status: "waiting"});
  } else if (data?.type === "state") {
    view.ttt = data;
    renderTictactoe();
  }
}

for (const c of cells) {
  c.addEventListener("click", async () => {
    const cell = Number(c.dataset.i);
    try {
      await client.request({action: "move", cell});
    } catch (e) {
      log(`move refused: ${e.reason ?? e.code} (${e.message})`, "error");
    }
  });
}

$("#restart").addEventListener("click", () => {
  client.request({action: "restart"}).catch((e) => log(`restart refused: ${e.reason ?? e.code}`, "error"));
});

// --- chat ----------------------------------------------------------------

function resetChat() {
  view.members = new Map();
  $("#messages").replaceChildren();
  $("#members").replaceChildren();
}

function renderMembers() {
  $("#members").replaceChildren(
    ...[...view.members.values()].map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }),
  );
}

function chatLine(who, text, kind = "said") {
  const li = document.createElement("li");
  li.className = kind;
  if (who) {
    const b = document.createElement("b");
    b.textContent = who;
    li.append(b, " ");
  }
  li.append(text);
  const list = $("#messages");
  list.append(li);
  while (list.children.length > 500) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function onChat(data) {
  switch (data?.type) {
    case "welcome":
      resetChat();
      for (const m of data.members ?? []) view.members.set(m.id, m.name);
      view.members.set(client.player, ui.name.value);
      for (const line of data.history ?? []) chatLine(line.from, line.text);
      break;
    case "joined":
      view.members.set(data.id, data.name);
      chatLine(null, `${data.name} joined`, "notice");
      break;
    case "left":
      view.members.delete(data.id);
      chatLine(null, `${data.name} left`, "notice");
      break;
    case "said":
      chatLine(data.from, data.text);
      break;
  }
  renderMembers();
}

$("#say").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("#text");
  const say = input.value.trim();
  if (!say) return;
  client.request({say}).then(
    () => (input.value = ""),
    (e) => log(`not sent: ${e.reason ?? e.code} (${e.message})`, "error"),
  );
});

// --- any other game: raw JSON ----------------------------------------------

function onRaw(data) {
  const li = document.createElement("li");
  li.textContent = JSON.stringify(data);
  $("#events").append(li);
}

$("#send").addEventListener("submit", (ev) => {
  ev.preventDefault();
  let data;
  try {
    data = JSON.parse($("#json").value);
  } catch (e) {
    log(`not JSON: ${e.message}`, "error");
    return;
  }
  client.request(data).catch((e) => log(`refused: ${e.reason ?? e.code} (${e.message})`, "error"));
});

// --- room lifecycle ---------------------------------------------------------

/** Keeps the picker's "game version" label in step with what the room runs. */
function labelGame(game, version) {
  const opt = [...ui.game.options].find((o) => o.value === game);
  if (opt && version) opt.textContent = `${game} ${version}`;
}

// The panel a game is drawn in: the tictactoe builds in other languages
// (tictactoe-js, tictactoe-c) speak the same messages as tictactoe.
function panelOf(game) {
  if (/^tictactoe(-|$)/.test(game ?? "")) return "tictactoe";
  return game in ui.panels && game !== "raw" ? game : "raw";
}

function showRoom(info) {
  view.game = info.game;
  labelGame(info.game, info.version);
  const panel = panelOf(info.game);
  for (const [name, el] of Object.entries(ui.panels)) el.hidden = name !== panel;
  ui.idle.hidden = true;
  ui.roominfo.hidden = false;
  ui.where.textContent = `${info.game} / ${info.room}`;
  ui.version.textContent = info.version ?? "–";
  ui.player.textContent = String(client.player ?? "–");
  ui.userinfo.hidden = client.user === null;
  ui.user.textContent = client.user ?? "–";
  setJoined(true);
}

function hideRoom() {
  view.game = null;
  for (const el of Object.values(ui.panels)) el.hidden = true;
  ui.idle.hidden = false;
  ui.roominfo.hidden = true;
  ui.version.textContent = "–";
  setJoined(false);
}

function setJoined(joined) {
  ui.join.disabled = joined || !ui.signin.hidden;
  ui.leave.disabled = !joined;
  for (const el of [ui.game, ui.room, ui.name]) el.disabled = joined;
}

function resetGameViews() {
  resetTictactoe();
  resetChat();
  $("#events").replaceChildren();
}

async function join() {
  const game = ui.game.value;
  const room = ui.room.value.trim() || "lobby";
  const name = ui.name.value.trim();
  if (!ui.signin.hidden) return;
  if (!name) {
    ui.name.focus();
    return;
  }
  resetGameViews();
  setJoined(true);
  try {
    await client.join(game, room, name);
  } catch (e) {
    if (e.code === "ticket_required") needSignIn();
    setJoined(false);
    log(`join refused: ${e.code}${e.reason ? ` (${e.reason})` : ""}: ${e.message}`, "error");
  }
}

ui.lobby.addEventListener("submit", (ev) => {
  ev.preventDefault();
  join();
});

ui.leave.addEventListener("click", async () => {
  hideRoom();
  resetGameViews();
  try {
    await client.leave();
    log("left the room");
  } catch (e) {
    log(`leave: ${e.message}`, "error");
  }
});

// --- start -----------------------------------------------------------------

const config = await loadConfig();
ui.server.textContent = config.server ?? "";
const games = config.games?.length ? config.games : [{name: "tictactoe"}, {name: "chat"}];
for (const g of games) {
  const opt = document.createElement("option");
  opt.value = g.name;
  opt.textContent = g.version ? `${g.name} ${g.version}` : g.name;
  ui.game.append(opt);
}
if (params.get("game")) ui.game.value = params.get("game");
if (params.get("room")) ui.room.value = params.get("room");
ui.name.value = params.get("name") || `player-${Math.floor(Math.random() * 900 + 100)}`;
resetGameViews();

const auth = config.auth ?? {};
const client = new RespawnClient(wsUrl(config), {ticket: auth.required && auth.dev_tickets ? devTicket : null});
// For the console and for tests.
window.respawn = client;

client.on("state", (state) => {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  if (state === "reconnecting") log("connection lost, reconnecting", "warn");
});
client.on("retry", ({attempt, delayMs}) => {
  if (attempt > 0) log(`retry ${attempt + 1} in ${(delayMs / 1000).toFixed(1)} s`, "warn");
});
client.on("welcome", (w) => {
  if (w.server) ui.server.textContent = w.server;
});
client.on("joined", (j) => {
  showRoom(j);
  const who = j.user ? `player ${j.player}, user ${j.user}` : `player ${j.player}`;
  if (j.takeover) log(`took over the seat of ${who} from another tab in ${j.game}/${j.room} (version ${j.version})`, "good");
  else log(`joined ${j.game}/${j.room} as ${who} (version ${j.version})`);
});
client.on("resumed", (r) => {
  if (r.game) showRoom(r);
  log(`resumed seat of player ${r.player} in ${r.game}/${r.room} (version ${r.version})`, "good");
});
client.on("seatlost", (s) => {
  resetGameViews();
  log(`seat in ${s.game}/${s.room} lost (${s.message ?? s.code}); joining again`, "warn");
});
client.on("swapped", (s) => {
  ui.version.textContent = s.version;
  labelGame(view.game, s.version);
  log(`hot swap: ${s.from} → ${s.version}, state kept`, "good");
});
client.on("restarted", (r) => {
  if (r.version) ui.version.textContent = r.version;
  log(`game restarted (${r.reason}) from its last good state`, "warn");
});
client.on("kicked", (k) => {
  hideRoom();
  log(`kicked: ${k.reason}`, "error");
});
client.on("closed", (c) => {
  hideRoom();
  log(`the room was closed: ${c.reason}`, "error");
});
client.on("system", (m) => log(`host: ${m.message}`, "warn"));
client.on("left", () => {
  if (!client.room) hideRoom();
});
client.on("shutdown", (s) => log(`host shutting down: ${s.message}`, "warn"));
client.on("error", (e) => {
  if (e.code === "superseded") log("this seat was taken over by another tab or device of the same user", "warn");
  else log(`${e.code}${e.reason ? ` (${e.reason})` : ""}: ${e.message}`, "error");
  if (!client.room && !client.joining && view.game) hideRoom();
});
client.on("event", (data) => {
  const panel = panelOf(view.game);
  if (panel === "tictactoe") onTictactoe(data);
  else if (panel === "chat") onChat(data);
  else onRaw(data);
});

client.connect();
if (auth.required && !auth.dev_tickets) needSignIn();
else if (params.get("autojoin") === "1") join();
if (auth.required && auth.dev_tickets) log("joining with development tickets from this host: anyone can play as anyone", "warn");
