/*
 * testing.h: a room without a host, for native unit tests of a C game's
 * logic. It implements the host's imports (recording every effect, with
 * an in-memory storage) and the few helpers of the generated bindings a
 * game calls, so a test is compiled natively with the game's sources
 * but WITHOUT bindings/room.c:
 *
 *     cc -I guest-sdk/c -I guest-sdk/c/bindings test.c game.c
 *
 * In the test, `rt_join`, `rt_message`, `rt_leave` call the game's
 * exports the way the host does; `rt_sent(i)` is the i-th effect.
 */
#ifndef RESPAWN_TESTING_H
#define RESPAWN_TESTING_H

#include "respawn.h"

#define RT_MAX_EFFECTS 4096
#define RT_MAX_KV 256

/* What a call did: a send (to >= 0), a broadcast (to == -1), a log
 * (to == -2, level in `level`), a kick (to == -3). */
typedef struct {
  long long to;
  int level;
  char *text;
} rt_effect;

static rt_effect rt_effects[RT_MAX_EFFECTS];
static int rt_n_effects;
static uint64_t rt_clock = 1700000000000ull;
static uint64_t rt_seed = 0x9E3779B97F4A7C15ull;
static struct {
  char *key;
  uint8_t *value;
  size_t len;
} rt_kv[RT_MAX_KV];
static int rt_n_kv;
/* Storage refuses writes past this many bytes of keys and values (-1: no quota). */
static long long rt_kv_quota = -1;

static inline char *rt__dup(const uint8_t *p, size_t n) {
  char *s = (char *)malloc(n + 1);
  if (!s) abort();
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

static inline void rt__push(long long to, int level, const uint8_t *p, size_t n) {
  if (rt_n_effects == RT_MAX_EFFECTS) abort();
  rt_effects[rt_n_effects++] = (rt_effect){to, level, rt__dup(p, n)};
}

/* Forgets recorded effects. */
static inline void rt_clear(void) {
  for (int i = 0; i < rt_n_effects; i++) free(rt_effects[i].text);
  rt_n_effects = 0;
}

/* The last effect sent to `id` (a send to it or any broadcast), or NULL. */
static inline const char *rt_last_for(long long id) {
  for (int i = rt_n_effects - 1; i >= 0; i--)
    if (rt_effects[i].to == id || rt_effects[i].to == -1) return rt_effects[i].text;
  return NULL;
}

/* Whether a log line at `level` contains `needle`. */
static inline bool rt_logged(int level, const char *needle) {
  for (int i = 0; i < rt_n_effects; i++)
    if (rt_effects[i].to == -2 && rt_effects[i].level == level && strstr(rt_effects[i].text, needle)) return true;
  return false;
}

/* ---- the host's imports ---- */

void respawn_game_host_send(respawn_game_host_player_id_t to, room_list_u8_t *payload) {
  rt__push((long long)to, 0, payload->ptr, payload->len);
}
void respawn_game_host_broadcast(room_list_u8_t *payload, respawn_game_host_player_id_t *except) {
  (void)except;
  rt__push(-1, 0, payload->ptr, payload->len);
}
void respawn_game_host_kick(respawn_game_host_player_id_t player, room_string_t *reason) {
  (void)player;
  rt__push(-3, 0, reason->ptr, reason->len);
}
void respawn_game_host_log(respawn_game_host_level_t level, room_string_t *message) {
  rt__push(-2, level, message->ptr, message->len);
  /* An error line is what rs_panic says before it traps: show it. */
  if (level == RESPAWN_GAME_TYPES_LEVEL_ERROR) fprintf(stderr, "guest: %.*s\n", (int)message->len, (const char *)message->ptr);
}
uint64_t respawn_game_host_now_ms(void) { return rt_clock; }
uint64_t respawn_game_host_random_u64(void) {
  rt_seed ^= rt_seed >> 12;
  rt_seed ^= rt_seed << 25;
  rt_seed ^= rt_seed >> 27;
  return rt_seed * 2685821657736338717ull;
}
void respawn_game_host_set_tick_interval(uint32_t ms) { (void)ms; }

static inline int rt__find(room_string_t *key) {
  for (int i = 0; i < rt_n_kv; i++)
    if (strlen(rt_kv[i].key) == key->len && memcmp(rt_kv[i].key, key->ptr, key->len) == 0) return i;
  return -1;
}

static inline long long rt__kv_used(void) {
  long long n = 0;
  for (int i = 0; i < rt_n_kv; i++) n += (long long)(strlen(rt_kv[i].key) + rt_kv[i].len);
  return n;
}

static inline bool rt__bad_key(room_string_t *key, respawn_game_kv_kv_error_t *err) {
  if (key->len >= 1 && key->len <= 256) return false;
  err->tag = RESPAWN_GAME_KV_KV_ERROR_INVALID_KEY;
  return true;
}

bool respawn_game_kv_get(room_string_t *key, room_option_list_u8_t *ret, respawn_game_kv_kv_error_t *err) {
  if (rt__bad_key(key, err)) return false;
  int i = rt__find(key);
  ret->is_some = i >= 0;
  if (i >= 0) {
    ret->val.ptr = (uint8_t *)rt__dup(rt_kv[i].value, rt_kv[i].len);
    ret->val.len = rt_kv[i].len;
  }
  return true;
}

bool respawn_game_kv_set(room_string_t *key, room_list_u8_t *value, respawn_game_kv_kv_error_t *err) {
  if (rt__bad_key(key, err)) return false;
  int i = rt__find(key);
  long long grows = (long long)value->len - (i >= 0 ? (long long)rt_kv[i].len : -(long long)key->len);
  if (rt_kv_quota >= 0 && rt__kv_used() + grows > rt_kv_quota) {
    err->tag = RESPAWN_GAME_KV_KV_ERROR_QUOTA_EXCEEDED;
    err->val.quota_exceeded = (uint64_t)rt_kv_quota;
    return false;
  }
  if (i < 0) {
    if (rt_n_kv == RT_MAX_KV) abort();
    i = rt_n_kv++;
    rt_kv[i].key = rt__dup(key->ptr, key->len);
  } else {
    free(rt_kv[i].value);
  }
  rt_kv[i].value = (uint8_t *)rt__dup(value->ptr, value->len);
  rt_kv[i].len = value->len;
  return true;
}

bool respawn_game_kv_delete(room_string_t *key, respawn_game_kv_kv_error_t *err) {
  if (rt__bad_key(key, err)) return false;
  int i = rt__find(key);
  if (i >= 0) {
    free(rt_kv[i].key);
    free(rt_kv[i].value);
    rt_kv[i] = rt_kv[--rt_n_kv];
  }
  return true;
}

/* The stored text under `key` (NUL-terminated), or NULL. */
static inline const char *rt_kv_get(const char *key) {
  room_string_t k = {(uint8_t *)key, strlen(key)};
  int i = rt__find(&k);
  return i >= 0 ? (const char *)rt_kv[i].value : NULL;
}

/* ---- the bindings' helpers a game calls ---- */

void room_string_free(room_string_t *s) {
  free(s->ptr);
  s->ptr = NULL;
  s->len = 0;
}
void room_list_u8_free(room_list_u8_t *l) {
  free(l->ptr);
  l->ptr = NULL;
  l->len = 0;
}
void exports_respawn_game_game_player_free(exports_respawn_game_game_player_t *p) {
  room_string_free(&p->name);
  if (p->user.is_some) {
    room_string_free(&p->user.val.user_id);
    for (size_t i = 0; i < p->user.val.claims.len; i++) {
      room_string_free(&p->user.val.claims.ptr[i].f0);
      room_string_free(&p->user.val.claims.ptr[i].f1);
    }
    free(p->user.val.claims.ptr);
  }
}

/* ---- driving the game as the host does ---- */

static rs_rejection rt_rejection;

/* The code of the last rejection (after a call returned false). */
static inline const char *rt_code(void) {
  static char code[64];
  snprintf(code, sizeof code, "%.*s", (int)rt_rejection.code.len, (const char *)rt_rejection.code.ptr);
  return code;
}

static inline void rt__forget_rejection(void) {
  room_string_free(&rt_rejection.code);
  room_string_free(&rt_rejection.message);
}

static inline void rt_init(void) {
  room_string_t room = rs_string("test");
  room_list_u8_t config = {(uint8_t *)rt__dup((const uint8_t *)"{}", 2), 2};
  room_string_t err = {0};
  if (!exports_respawn_game_game_init(&room, &config, &err)) abort();
}

/* A player joins (`user` may be NULL); false if the game refused. */
static inline bool rt_join(uint64_t id, const char *name, const char *user) {
  rt__forget_rejection();
  exports_respawn_game_game_player_t p = {.id = id, .name = rs_string(name)};
  if (user) {
    p.user.is_some = true;
    p.user.val.user_id = rs_string(user);
  }
  return exports_respawn_game_game_on_join(&p, &rt_rejection);
}

/* A player's message (JSON text); false if the game refused. */
static inline bool rt_message(uint64_t id, const char *json) {
  rt__forget_rejection();
  room_list_u8_t payload = {(uint8_t *)rt__dup((const uint8_t *)json, strlen(json)), strlen(json)};
  return exports_respawn_game_game_on_message(id, &payload, &rt_rejection);
}

static inline void rt_leave(uint64_t id) { exports_respawn_game_game_on_leave(id); }

/* Snapshot and restore into the same game: a hot swap. False if restore failed. */
static inline bool rt_swap(void) {
  room_list_u8_t state = {0};
  exports_respawn_game_game_snapshot(&state);
  room_string_t err = {0};
  bool ok = exports_respawn_game_game_restore(&state, &err);
  room_string_free(&err);
  return ok;
}

/* Restores the game from JSON text; false (and the reason freed) if refused. */
static inline bool rt_restore(const char *json) {
  room_list_u8_t state = {(uint8_t *)rt__dup((const uint8_t *)json, strlen(json)), strlen(json)};
  room_string_t err = {0};
  bool ok = exports_respawn_game_game_restore(&state, &err);
  room_string_free(&err);
  return ok;
}

/* Checks `cond`, printing where it failed; the test's exit code counts failures. */
static int rt_failures;
#define RT_CHECK(cond)                                                              \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
      rt_failures++;                                                                \
    }                                                                               \
  } while (0)

#endif
