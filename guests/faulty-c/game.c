/*
 * Misbehaves on request, for the end-to-end tests: a C room must be
 * contained exactly like a Rust one (restart from its checkpoint, crash
 * capsule, what the guest said in the log). Every message is
 * `{"do": <what>}`; anything else is counted and answered with the count.
 * Test-only: never deploy it.
 */
#include "respawn.h"

static uint64_t count;

/* Kept out of line so the crash signature names it. */
__attribute__((noinline)) static void check_invariant(uint64_t n) {
  rs_panic("invariant broken on purpose at count %llu", (unsigned long long)n);
}

__attribute__((noinline)) static int read_far(void) {
  /* Far past the room's memory limit: out of bounds, a trap. */
  volatile int *far = (volatile int *)(uintptr_t)0xfffffff0u;
  return *far;
}

__attribute__((noinline)) static void hoard(void) {
  for (;;) {
    /* Growing the memory is what the limit stops; touching a byte per
     * chunk keeps the compiler from dropping the calls. */
    volatile char *p = malloc(8 << 20);
    if (!p) rs_panic("malloc failed");
    p[0] = 1;
  }
}

static void send_count(uint64_t to) {
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"count\":%llu}", (unsigned long long)count);
  rs_send(to, &b);
  rs_buf_free(&b);
}

bool exports_respawn_game_game_init(room_string_t *room, room_list_u8_t *config, room_string_t *err) {
  (void)err;
  room_string_free(room);
  room_list_u8_free(config);
  return true;
}

bool exports_respawn_game_game_on_join(rs_player *p, rs_rejection *err) {
  (void)err;
  send_count(p->id);
  exports_respawn_game_game_player_free(p);
  return true;
}

void exports_respawn_game_game_on_leave(uint64_t id) { (void)id; }

bool exports_respawn_game_game_on_message(uint64_t from, room_list_u8_t *payload, rs_rejection *err) {
  rs_iter it;
  rs_span key, value;
  char what[16] = "";
  /* Spans point into the payload: read what is asked before freeing it. */
  if (rs_json_valid(payload->ptr, payload->len) && rs_json_open(rs_json_text(payload->ptr, payload->len), false, &it))
    while (rs_json_next(&it, &key, &value))
      if (rs_key_is(key, "do") && !rs_json_string(value, what, sizeof what)) what[0] = 0;
  room_list_u8_free(payload);
  if (strcmp(what, "panic") == 0) check_invariant(count);
  if (strcmp(what, "oob") == 0) read_far();
  if (strcmp(what, "loop") == 0)
    for (volatile unsigned spin = 0;; spin++) {
    }
  if (strcmp(what, "alloc") == 0) hoard();
  if (strcmp(what, "reject") == 0) return rs_reject(err, "refused", "the game refused this on purpose");
  count++;
  send_count(from);
  return true;
}

void exports_respawn_game_game_on_tick(uint64_t now_ms) { (void)now_ms; }

void exports_respawn_game_game_snapshot(room_list_u8_t *ret) {
  rs_buf b = {0};
  rs_buf_printf(&b, "{\"count\":%llu}", (unsigned long long)count);
  if (b.failed) rs_panic("no memory to write the snapshot");
  ret->ptr = (uint8_t *)b.ptr;
  ret->len = b.len;
}

bool exports_respawn_game_game_restore(room_list_u8_t *state, room_string_t *err) {
  rs_iter it;
  rs_span key, value;
  int64_t n = 0;
  bool ok = rs_json_valid(state->ptr, state->len) && rs_json_open(rs_json_text(state->ptr, state->len), false, &it);
  if (ok)
    while (rs_json_next(&it, &key, &value))
      if (rs_key_is(key, "count") && (!rs_json_int(value, &n) || n < 0)) ok = false;
  room_list_u8_free(state);
  if (!ok || it.bad) return rs_fail(err, "cannot restore this state: expected {\"count\": N}");
  count = (uint64_t)n;
  return true;
}
