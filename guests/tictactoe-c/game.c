/*
 * Tic-tac-toe in C: the Rust example's rules, messages, state broadcasts
 * and snapshot format (guests/tictactoe), so the same clients play it and
 * a live room can be swapped between the languages with its board.
 *
 * The first two players to join take X and O; later players watch and
 * take a seat when one frees up. Wins are counted in the game's storage.
 */
#include "respawn.h"

#define MAX_SPECTATORS 32
/* A display name is at most 32 characters: 128 bytes of UTF-8. */
#define NAME_CAP 136
#define USER_CAP 264

typedef struct {
  bool present;
  uint64_t id;
  char name[NAME_CAP];
  bool has_user;
  char user_id[USER_CAP];
} member;

enum status { WAITING, PLAYING, WON, DRAW };
static const char *const STATUS[] = {"waiting", "playing", "won", "draw"};
static const int LINES[8][3] = {{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {0, 3, 6}, {1, 4, 7}, {2, 5, 8}, {0, 4, 8}, {2, 4, 6}};

/* The whole room. A mark is 'X', 'O' or 0. */
static struct {
  char board[9];
  member seats[2];
  member spectators[MAX_SPECTATORS];
  int n_spectators;
  char turn;
  enum status status;
  char winner;
  bool has_line;
  int line[3];
  uint32_t games;
  bool has_winner_wins;
  uint64_t winner_wins;
} g;

static int seat_of(char mark) { return mark == 'X' ? 0 : 1; }

static char mark_of(uint64_t id) {
  if (g.seats[0].present && g.seats[0].id == id) return 'X';
  if (g.seats[1].present && g.seats[1].id == id) return 'O';
  return 0;
}

static const char *role(uint64_t id) {
  char m = mark_of(id);
  return m == 'X' ? "X" : m == 'O' ? "O" : "spectator";
}

static void new_game(void) {
  memset(g.board, 0, sizeof g.board);
  g.winner = 0;
  g.has_line = false;
  g.has_winner_wins = false;
  if (g.seats[0].present && g.seats[1].present) {
    g.status = PLAYING;
    g.turn = 'X';
  } else {
    g.status = WAITING;
    g.turn = 0;
  }
}

static void put_mark(rs_buf *b, char m) { rs_buf_puts(b, m == 'X' ? "\"X\"" : m == 'O' ? "\"O\"" : "null"); }

static void put_public(rs_buf *b, const member *m) {
  if (!m->present) {
    rs_buf_puts(b, "null");
    return;
  }
  rs_buf_printf(b, "{\"id\":%llu,\"name\":", (unsigned long long)m->id);
  rs_buf_json_string(b, m->name, strlen(m->name));
  rs_buf_puts(b, "}");
}

/* A member as the snapshot keeps it: its user id too. */
static void put_member(rs_buf *b, const member *m) {
  if (!m->present) {
    rs_buf_puts(b, "null");
    return;
  }
  rs_buf_printf(b, "{\"id\":%llu,\"name\":", (unsigned long long)m->id);
  rs_buf_json_string(b, m->name, strlen(m->name));
  if (m->has_user) {
    rs_buf_puts(b, ",\"user_id\":");
    rs_buf_json_string(b, m->user_id, strlen(m->user_id));
  }
  rs_buf_puts(b, "}");
}

static void put_board(rs_buf *b) {
  rs_buf_puts(b, "[");
  for (int i = 0; i < 9; i++) {
    if (i) rs_buf_puts(b, ",");
    put_mark(b, g.board[i]);
  }
  rs_buf_puts(b, "]");
}

static void put_line(rs_buf *b) {
  if (g.has_line) rs_buf_printf(b, "[%d,%d,%d]", g.line[0], g.line[1], g.line[2]);
  else rs_buf_puts(b, "null");
}

static void put_winner_wins(rs_buf *b) {
  if (g.has_winner_wins) rs_buf_printf(b, "%llu", (unsigned long long)g.winner_wins);
  else rs_buf_puts(b, "null");
}

static void broadcast_state(void) {
  rs_buf b = {0};
  rs_buf_puts(&b, "{\"type\":\"state\",\"board\":");
  put_board(&b);
  rs_buf_puts(&b, ",\"turn\":");
  put_mark(&b, g.turn);
  rs_buf_printf(&b, ",\"status\":\"%s\",\"winner\":", STATUS[g.status]);
  put_mark(&b, g.winner);
  rs_buf_puts(&b, ",\"line\":");
  put_line(&b);
  rs_buf_puts(&b, ",\"players\":{\"X\":");
  put_public(&b, &g.seats[0]);
  rs_buf_puts(&b, ",\"O\":");
  put_public(&b, &g.seats[1]);
  rs_buf_printf(&b, "},\"spectators\":%d,\"games\":%u,\"winner_wins\":", g.n_spectators, g.games);
  put_winner_wins(&b);
  rs_buf_puts(&b, "}");
  rs_broadcast(&b);
  rs_buf_free(&b);
}

static void tell_role(uint64_t id) {
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"type\":\"seat\",\"mark\":\"%s\"}", role(id));
  rs_send(id, &b);
  rs_buf_free(&b);
}

static void tell_roles(void) {
  for (int s = 0; s < 2; s++)
    if (g.seats[s].present) tell_role(g.seats[s].id);
}

static void seat_free_players(void) {
  for (int s = 0; s < 2; s++) {
    if (!g.seats[s].present && g.n_spectators > 0) {
      g.seats[s] = g.spectators[0];
      memmove(&g.spectators[0], &g.spectators[1], (size_t)(g.n_spectators - 1) * sizeof(member));
      g.n_spectators--;
    }
  }
}

/* Adds a win to `mark`'s stored count; storage failing never spoils the game. */
static void count_win(char mark) {
  const member *m = &g.seats[seat_of(mark)];
  char key[USER_CAP + 16];
  snprintf(key, sizeof key, m->has_user ? "wins/user/%s" : "wins/name/%s", m->has_user ? m->user_id : m->name);
  respawn_game_kv_kv_error_t err;
  room_list_u8_t old;
  if (!rs_kv_get(key, &old, &err)) {
    rs_log(RS_WARN, "win not counted under %s: %s", key, rs_kv_error_name(&err));
    return;
  }
  int64_t wins = 0;
  bool readable = !old.ptr || (rs_json_int((rs_span){(const char *)old.ptr, old.len}, &wins) && wins >= 0);
  room_list_u8_free(&old);
  if (!readable) {
    rs_log(RS_WARN, "win not counted under %s: the stored value is not a count", key);
    return;
  }
  rs_buf total = {0};
  if (wins < INT64_MAX) wins++; /* saturating, like the Rust game */
  rs_buf_printf(&total, "%lld", (long long)wins);
  bool stored = rs_kv_set(key, &total, &err);
  rs_buf_free(&total);
  if (!stored) {
    rs_log(RS_WARN, "win not counted under %s: %s", key, rs_kv_error_name(&err));
    return;
  }
  g.has_winner_wins = true;
  g.winner_wins = (uint64_t)wins;
}

static bool play(char mark, int64_t cell, rs_rejection *err) {
  if (g.status == WAITING) return rs_reject(err, "waiting", "waiting for an opponent");
  if (g.status == WON || g.status == DRAW) return rs_reject(err, "game-over", "the game is over: send {\"action\":\"restart\"}");
  if (g.turn != mark) return rs_reject(err, "not-your-turn", "wait for your opponent's move");
  if (cell < 0 || cell > 8) return rs_reject(err, "out-of-range", "cell %lld is off the board (0 to 8)", (long long)cell);
  if (g.board[cell]) return rs_reject(err, "cell-taken", "cell %lld is already taken", (long long)cell);
  g.board[cell] = mark;
  for (int l = 0; l < 8; l++) {
    if (g.board[LINES[l][0]] == mark && g.board[LINES[l][1]] == mark && g.board[LINES[l][2]] == mark) {
      g.status = WON;
      g.winner = mark;
      g.has_line = true;
      memcpy(g.line, LINES[l], sizeof g.line);
      g.turn = 0;
      g.games++;
      return true;
    }
  }
  bool full = true;
  for (int i = 0; i < 9; i++) full = full && g.board[i];
  if (full) {
    g.status = DRAW;
    g.turn = 0;
    g.games++;
  } else {
    g.turn = mark == 'X' ? 'O' : 'X';
  }
  return true;
}

bool exports_respawn_game_game_init(room_string_t *room, room_list_u8_t *config, room_string_t *err) {
  (void)err;
  room_string_free(room);
  room_list_u8_free(config);
  return true;
}

bool exports_respawn_game_game_on_join(rs_player *p, rs_rejection *err) {
  bool ok = true;
  member m = {.present = true, .id = p->id};
  if (p->name.len >= NAME_CAP) {
    ok = rs_reject(err, "bad-name", "names are at most 32 characters");
  } else if (p->user.is_some && p->user.val.user_id.len >= USER_CAP) {
    ok = rs_reject(err, "bad-user", "user ids are at most %d bytes", USER_CAP - 1);
  } else {
    memcpy(m.name, p->name.ptr, p->name.len);
    if (p->user.is_some) {
      m.has_user = true;
      memcpy(m.user_id, p->user.val.user_id.ptr, p->user.val.user_id.len);
    }
    if (!g.seats[0].present || !g.seats[1].present) {
      g.seats[g.seats[0].present ? 1 : 0] = m;
      if (g.seats[0].present && g.seats[1].present) new_game();
    } else if (g.n_spectators < MAX_SPECTATORS) {
      g.spectators[g.n_spectators++] = m;
    } else {
      ok = rs_reject(err, "room-full", "this room is full");
    }
  }
  if (ok) {
    tell_role(p->id);
    broadcast_state();
  }
  exports_respawn_game_game_player_free(p);
  return ok;
}

void exports_respawn_game_game_on_leave(uint64_t id) {
  for (int i = 0; i < g.n_spectators; i++) {
    if (g.spectators[i].id == id) {
      memmove(&g.spectators[i], &g.spectators[i + 1], (size_t)(g.n_spectators - i - 1) * sizeof(member));
      g.n_spectators--;
      break;
    }
  }
  char mark = mark_of(id);
  if (!mark) {
    broadcast_state();
    return;
  }
  g.seats[seat_of(mark)].present = false;
  seat_free_players();
  if (g.status == PLAYING) {
    /* The pair changed: the unfinished game is void. */
    new_game();
  } else if (!g.seats[0].present || !g.seats[1].present) {
    g.status = WAITING;
    g.turn = 0;
  }
  tell_roles();
  broadcast_state();
}

/* {"action":"move","cell":N} or {"action":"restart"}, as the Rust guest's
 * serde reads them: a move has exactly those two fields, a restart
 * ignores any others. */
static bool parse_action(const room_list_u8_t *payload, bool *restart, int64_t *cell, rs_rejection *err) {
  rs_iter it;
  rs_span key, value, action = {0}, cell_v = {0};
  bool extra = false;
  if (!rs_json_valid(payload->ptr, payload->len) || !rs_json_open(rs_json_text(payload->ptr, payload->len), false, &it))
    return rs_reject(err, "invalid-message", "this game cannot read that message: expected an object with an `action`");
  while (rs_json_next(&it, &key, &value)) {
    if (rs_key_is(key, "action") && !action.p) action = value;
    else if (rs_key_is(key, "cell") && !cell_v.p) cell_v = value;
    else extra = true;
  }
  if (it.bad || !action.p) return rs_reject(err, "invalid-message", "this game cannot read that message: missing field `action`");
  if (rs_json_is_string(action, "restart")) {
    *restart = true;
    return true;
  }
  if (rs_json_is_string(action, "move") && !extra && cell_v.p && rs_json_int(cell_v, cell)) {
    *restart = false;
    return true;
  }
  return rs_reject(err, "invalid-message", "this game cannot read that message: expected a move with an integer `cell` and nothing else, or a restart");
}

bool exports_respawn_game_game_on_message(uint64_t from, room_list_u8_t *payload, rs_rejection *err) {
  bool restart = false;
  int64_t cell = 0;
  bool ok = parse_action(payload, &restart, &cell, err);
  room_list_u8_free(payload);
  if (!ok) return false;
  char mark = mark_of(from);
  if (!mark) return rs_reject(err, "spectator", "spectators cannot play");
  if (restart) {
    if (g.status == PLAYING || g.status == WAITING) return rs_reject(err, "game-not-over", "finish this game first");
    new_game();
  } else {
    if (!play(mark, cell, err)) return false;
    if (g.status == WON) count_win(mark);
  }
  broadcast_state();
  return true;
}

void exports_respawn_game_game_on_tick(uint64_t now_ms) { (void)now_ms; }

/* The state in the Rust guest's serde format. */
void exports_respawn_game_game_snapshot(room_list_u8_t *ret) {
  rs_buf b = {0};
  rs_buf_puts(&b, "{\"board\":");
  put_board(&b);
  rs_buf_puts(&b, ",\"seats\":[");
  put_member(&b, &g.seats[0]);
  rs_buf_puts(&b, ",");
  put_member(&b, &g.seats[1]);
  rs_buf_puts(&b, "],\"spectators\":[");
  for (int i = 0; i < g.n_spectators; i++) {
    if (i) rs_buf_puts(&b, ",");
    put_member(&b, &g.spectators[i]);
  }
  rs_buf_puts(&b, "],\"turn\":");
  put_mark(&b, g.turn);
  rs_buf_printf(&b, ",\"status\":\"%s\",\"winner\":", STATUS[g.status]);
  put_mark(&b, g.winner);
  rs_buf_puts(&b, ",\"line\":");
  put_line(&b);
  rs_buf_printf(&b, ",\"games\":%u,\"winner_wins\":", g.games);
  put_winner_wins(&b);
  rs_buf_puts(&b, "}");
  if (b.failed) rs_panic("no memory to write the snapshot"); /* the host keeps its last checkpoint */
  ret->ptr = (uint8_t *)b.ptr;
  ret->len = b.len;
}

static bool read_mark(rs_span v, char *out) {
  if (rs_json_is_null(v)) *out = 0;
  else if (rs_json_is_string(v, "X")) *out = 'X';
  else if (rs_json_is_string(v, "O")) *out = 'O';
  else return false;
  return true;
}

/* A seat or spectator; null is an empty seat. */
static bool read_member(rs_span v, member *m) {
  *m = (member){0};
  if (rs_json_is_null(v)) return true;
  rs_iter it;
  rs_span key, value;
  int64_t id = -1;
  if (!rs_json_open(v, false, &it)) return false;
  while (rs_json_next(&it, &key, &value)) {
    if (rs_key_is(key, "id")) {
      if (!rs_json_int(value, &id) || id < 0) return false;
    } else if (rs_key_is(key, "name")) {
      if (!rs_json_string(value, m->name, sizeof m->name)) return false;
    } else if (rs_key_is(key, "user_id")) {
      if (!rs_json_is_null(value)) {
        if (!rs_json_string(value, m->user_id, sizeof m->user_id)) return false;
        m->has_user = true;
      }
    }
  }
  m->present = id >= 0 && !it.bad;
  m->id = (uint64_t)id;
  return m->present;
}

/* Reads a snapshot of this game or of the Rust or JavaScript one. A
 * field it does not know is ignored, a missing one keeps its default. */
static bool restore(rs_span state, const char **why) {
  rs_iter it, arr;
  rs_span key, v, e;
  memset(&g, 0, sizeof g);
  *why = "it is not a JSON object";
  if (!rs_json_open(state, false, &it)) return false;
  while (rs_json_next(&it, &key, &v)) {
    int i = 0;
    int64_t n;
    *why = "a field has the wrong shape";
    if (rs_key_is(key, "board")) {
      if (!rs_json_open(v, true, &arr)) return false;
      while (rs_json_next(&arr, NULL, &e))
        if (i >= 9 || !read_mark(e, &g.board[i++])) return false;
      if (arr.bad || i != 9) return false;
    } else if (rs_key_is(key, "seats")) {
      if (!rs_json_open(v, true, &arr)) return false;
      while (rs_json_next(&arr, NULL, &e))
        if (i >= 2 || !read_member(e, &g.seats[i++])) return false;
      if (arr.bad || i != 2) return false;
    } else if (rs_key_is(key, "spectators")) {
      if (!rs_json_open(v, true, &arr)) return false;
      while (rs_json_next(&arr, NULL, &e))
        if (i >= MAX_SPECTATORS || !read_member(e, &g.spectators[i++])) return false;
      if (arr.bad) return false;
      g.n_spectators = i;
    } else if (rs_key_is(key, "turn")) {
      if (!read_mark(v, &g.turn)) return false;
    } else if (rs_key_is(key, "winner")) {
      if (!read_mark(v, &g.winner)) return false;
    } else if (rs_key_is(key, "status")) {
      bool known = false;
      for (int s = 0; s < 4; s++)
        if (rs_json_is_string(v, STATUS[s])) g.status = (enum status)s, known = true;
      if (!known) return false;
    } else if (rs_key_is(key, "line")) {
      g.has_line = !rs_json_is_null(v);
      if (g.has_line) {
        if (!rs_json_open(v, true, &arr)) return false;
        while (rs_json_next(&arr, NULL, &e)) {
          if (i >= 3 || !rs_json_int(e, &n) || n < 0 || n > 8) return false;
          g.line[i++] = (int)n;
        }
        if (arr.bad || i != 3) return false;
      }
    } else if (rs_key_is(key, "games")) {
      if (!rs_json_int(v, &n) || n < 0 || n > UINT32_MAX) return false;
      g.games = (uint32_t)n;
    } else if (rs_key_is(key, "winner_wins")) {
      g.has_winner_wins = !rs_json_is_null(v);
      if (g.has_winner_wins) {
        if (!rs_json_int(v, &n) || n < 0) return false;
        g.winner_wins = (uint64_t)n;
      }
    }
  }
  *why = "it is not valid JSON";
  return !it.bad;
}

bool exports_respawn_game_game_restore(room_list_u8_t *state, room_string_t *err) {
  const char *why = "";
  bool ok = rs_json_valid(state->ptr, state->len) && restore(rs_json_text(state->ptr, state->len), &why);
  if (!ok && !*why) why = "it is not valid JSON";
  room_list_u8_free(state);
  if (!ok) {
    memset(&g, 0, sizeof g);
    return rs_fail(err, "cannot restore this state: %s", why);
  }
  return true;
}
