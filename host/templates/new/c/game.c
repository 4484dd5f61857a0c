/*
 * {{name}}: players say lines to everyone in the room. A starting point:
 * change the state, the messages and the handlers. See respawn.h for the
 * room's calls and for who frees what.
 */
#include "respawn.h"

/* The room's state; snapshot and restore carry it across hot swaps,
 * restarts and replays. */
static struct {
  uint64_t lines;
} state;

bool exports_respawn_game_game_init(room_string_t *room, room_list_u8_t *config, room_string_t *err) {
  (void)err;
  room_string_free(room);
  room_list_u8_free(config);
  return true;
}

bool exports_respawn_game_game_on_join(rs_player *p, rs_rejection *err) {
  (void)err;
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"type\":\"hello\",\"lines\":%llu}", (unsigned long long)state.lines);
  rs_send(p->id, &b);
  rs_buf_free(&b);
  rs_buf_puts(&b, "{\"type\":\"joined\",\"name\":");
  rs_buf_json_string(&b, (const char *)p->name.ptr, p->name.len);
  rs_buf_puts(&b, "}");
  rs_broadcast_except(p->id, &b);
  rs_buf_free(&b);
  exports_respawn_game_game_player_free(p);
  return true;
}

void exports_respawn_game_game_on_leave(uint64_t player) { (void)player; }

/* {"say": "..."}: 1 to 200 bytes, said to everyone. */
bool exports_respawn_game_game_on_message(uint64_t from, room_list_u8_t *payload, rs_rejection *err) {
  char text[201];
  bool ok = false;
  rs_iter it;
  rs_span key, value, say = {0};
  if (rs_json_valid(payload->ptr, payload->len) && rs_json_open(rs_json_text(payload->ptr, payload->len), false, &it)) {
    ok = true;
    while (rs_json_next(&it, &key, &value)) {
      if (rs_key_is(key, "say") && !say.p) say = value;
      else ok = false;
    }
    ok = ok && !it.bad && say.p;
  }
  /* `say` points into the payload: read it before freeing that. */
  bool fits = ok && rs_json_string(say, text, sizeof text) && text[0] != 0;
  room_list_u8_free(payload);
  if (!ok) return rs_reject(err, "invalid-message", "send {\"say\": \"...\"}");
  if (!fits) return rs_reject(err, "bad-line", "say 1 to 200 bytes");
  state.lines++;
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"type\":\"said\",\"from\":%llu,\"text\":", (unsigned long long)from);
  rs_buf_json_string(&b, text, strlen(text));
  rs_buf_puts(&b, "}");
  rs_broadcast(&b);
  rs_buf_free(&b);
  return true;
}

void exports_respawn_game_game_on_tick(uint64_t now_ms) { (void)now_ms; }

void exports_respawn_game_game_snapshot(room_list_u8_t *ret) {
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"lines\":%llu}", (unsigned long long)state.lines);
  if (b.failed) rs_panic("no memory to write the snapshot"); /* the host keeps its last checkpoint */
  ret->ptr = (uint8_t *)b.ptr;
  ret->len = b.len;
}

bool exports_respawn_game_game_restore(room_list_u8_t *saved, room_string_t *err) {
  rs_iter it;
  rs_span key, value;
  int64_t lines = 0;
  bool ok = rs_json_valid(saved->ptr, saved->len) && rs_json_open(rs_json_text(saved->ptr, saved->len), false, &it);
  while (ok && rs_json_next(&it, &key, &value))
    if (rs_key_is(key, "lines")) ok = rs_json_int(value, &lines) && lines >= 0;
  ok = ok && !it.bad;
  room_list_u8_free(saved);
  if (!ok) return rs_fail(err, "cannot restore this state");
  state.lines = (uint64_t)lines;
  return true;
}
