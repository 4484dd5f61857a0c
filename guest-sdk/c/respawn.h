/*
 * respawn.h: a thin C SDK for Respawn games, over the bindings wit-bindgen
 * generates from the WIT world (bindings/room.h). A game implements the
 * seven exports `exports_respawn_game_game_*` of room.h; this header gives
 * it the room (send, broadcast, kick, log, clock, random numbers, ticks,
 * storage), rejections, a panic for states it cannot go on from
 * (`rs_panic`), a growable buffer to write JSON into, and a small reader
 * for the JSON players send.
 *
 * Ownership follows wit-bindgen's C convention: an export owns its
 * arguments (free them, e.g. `room_list_u8_free(payload)`), and what it
 * returns (an error string, a rejection, the snapshot) must come from
 * malloc: the bindings free it after the call. `rs_reject` and `rs_fail`
 * do that for you.
 *
 * Header only: include it in one translation unit (or in several; every
 * function is static).
 */
#ifndef RESPAWN_H
#define RESPAWN_H

#include "room.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t rs_player_id;
typedef exports_respawn_game_game_player_t rs_player;
typedef exports_respawn_game_game_rejection_t rs_rejection;

enum rs_level {
  RS_TRACE = RESPAWN_GAME_TYPES_LEVEL_TRACE,
  RS_DEBUG = RESPAWN_GAME_TYPES_LEVEL_DEBUG,
  RS_INFO = RESPAWN_GAME_TYPES_LEVEL_INFO,
  RS_WARN = RESPAWN_GAME_TYPES_LEVEL_WARN,
  RS_ERROR = RESPAWN_GAME_TYPES_LEVEL_ERROR,
};

/* ---- text ---------------------------------------------------------------- */

/* A growable byte buffer. `failed` is set if memory ran out; every later
 * write is then ignored, and senders skip a failed buffer. */
typedef struct {
  char *ptr;
  size_t len, cap;
  bool failed;
} rs_buf;

static inline void rs_buf_put(rs_buf *b, const void *bytes, size_t n) {
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = (char *)realloc(b->ptr, cap);
    if (!p) {
      b->failed = true;
      return;
    }
    b->ptr = p;
    b->cap = cap;
  }
  memcpy(b->ptr + b->len, bytes, n);
  b->len += n;
  b->ptr[b->len] = 0;
}

static inline void rs_buf_puts(rs_buf *b, const char *s) { rs_buf_put(b, s, strlen(s)); }

static inline void rs_buf_printf(rs_buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = true;
  } else if ((size_t)n < sizeof small) {
    rs_buf_put(b, small, (size_t)n);
  } else {
    char *big = (char *)malloc((size_t)n + 1);
    if (!big) {
      b->failed = true;
      return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    rs_buf_put(b, big, (size_t)n);
    free(big);
  }
}

/* `s` (n bytes of UTF-8) as a JSON string, quotes included. */
static inline void rs_buf_json_string(rs_buf *b, const char *s, size_t n) {
  rs_buf_put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      rs_buf_put(b, esc, 2);
    } else if (c < 0x20) {
      rs_buf_printf(b, "\\u%04x", c);
    } else {
      rs_buf_put(b, &s[i], 1);
    }
  }
  rs_buf_put(b, "\"", 1);
}

static inline void rs_buf_free(rs_buf *b) {
  free(b->ptr);
  *b = (rs_buf){0};
}

/* Cuts `s` back to whole UTF-8 characters: text cut at a byte limit may
 * end inside one, and a WIT string must be valid UTF-8 (the host treats
 * an invalid one as the guest's fault). */
static inline void rs__utf8_trim(char *s) {
  size_t n = strlen(s), i = n;
  while (i > 0 && n - i < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
  if (i == 0) return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 0;
  if (need == 0 || (i - 1) + need > n) s[i - 1] = 0;
}

/* A malloc'ed copy of a C string as a WIT string (what exports return). */
static inline room_string_t rs_string(const char *s) {
  room_string_t out = {0};
  size_t n = strlen(s);
  out.ptr = (uint8_t *)malloc(n ? n : 1);
  if (out.ptr) {
    memcpy(out.ptr, s, n);
    out.len = n;
  }
  return out;
}

/* ---- the room ------------------------------------------------------------- */

static inline void rs_send(rs_player_id to, const rs_buf *json) {
  if (json->failed) return;
  room_list_u8_t payload = {(uint8_t *)json->ptr, json->len};
  respawn_game_host_send(to, &payload);
}

static inline void rs_broadcast(const rs_buf *json) {
  if (json->failed) return;
  room_list_u8_t payload = {(uint8_t *)json->ptr, json->len};
  respawn_game_host_broadcast(&payload, NULL);
}

static inline void rs_broadcast_except(rs_player_id except, const rs_buf *json) {
  if (json->failed) return;
  room_list_u8_t payload = {(uint8_t *)json->ptr, json->len};
  respawn_game_host_broadcast(&payload, &except);
}

static inline void rs_kick(rs_player_id player, const char *reason) {
  room_string_t r = {(uint8_t *)reason, strlen(reason)};
  respawn_game_host_kick(player, &r);
}

static inline void rs_log(enum rs_level level, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  rs__utf8_trim(line);
  room_string_t msg = {(uint8_t *)line, strlen(line)};
  respawn_game_host_log((respawn_game_host_level_t)level, &msg);
}

/* The room's clock, ms since the Unix epoch, fixed for the call (what
 * wasi-libc's clock_gettime and time() read too). */
static inline uint64_t rs_now_ms(void) { return respawn_game_host_now_ms(); }

/* The room's seeded generator (what wasi-libc's getentropy reads too). */
static inline uint64_t rs_random_u64(void) { return respawn_game_host_random_u64(); }

/* An unbiased number in [0, n); 0 when n is 0. */
static inline uint64_t rs_random_below(uint64_t n) {
  if (n == 0) return 0;
  uint64_t zone = UINT64_MAX - (UINT64_MAX % n);
  for (;;) {
    uint64_t r = rs_random_u64();
    if (r < zone) return r % n;
  }
}

/* Asks for on_tick every `ms` milliseconds; 0 stops ticking. */
static inline void rs_set_tick_interval(uint32_t ms) { respawn_game_host_set_tick_interval(ms); }

/* A message formatted into `out` (512 bytes), cut to whole characters. */
static inline void rs__vformat(char out[512], const char *fmt, va_list ap) {
  if (vsnprintf(out, 512, fmt, ap) < 0) out[0] = 0;
  rs__utf8_trim(out);
}

/* Fills `err` with a rejection and returns false (the arguments must be
 * UTF-8; the message is cut to 511 bytes of whole characters): `return rs_reject(err,
 * "cell-taken", "cell %d is already taken", cell);` */
static inline bool rs_reject(rs_rejection *err, const char *code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  rs__vformat(msg, fmt, ap);
  va_end(ap);
  err->code = rs_string(code);
  err->message = rs_string(msg);
  return false;
}

/* Fills a WIT error string (init, restore) and returns false. */
static inline bool rs_fail(room_string_t *err, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  rs__vformat(msg, fmt, ap);
  va_end(ap);
  *err = rs_string(msg);
  return false;
}

/* Ends the call as a bug, the way a Rust panic does: the message goes to
 * the log at error level (the host keeps it with the fault, in its log and
 * the crash report), then the call traps and the room goes on from its
 * last checkpoint. For states the game cannot continue from, never for a
 * player's bad move (reject that). */
__attribute__((noreturn, format(printf, 1, 2))) static inline void rs_panic(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  rs__vformat(msg, fmt, ap);
  va_end(ap);
  rs_log(RS_ERROR, "guest panicked: %s", msg);
  __builtin_trap();
}

/* ---- storage -------------------------------------------------------------- */

/* The name of a kv-error case, as the host's docs and the other SDKs spell it. */
static inline const char *rs_kv_error_name(const respawn_game_kv_kv_error_t *e) {
  switch (e->tag) {
  case RESPAWN_GAME_KV_KV_ERROR_INVALID_KEY: return "invalid-key";
  case RESPAWN_GAME_KV_KV_ERROR_TOO_LARGE: return "too-large";
  case RESPAWN_GAME_KV_KV_ERROR_QUOTA_EXCEEDED: return "quota-exceeded";
  case RESPAWN_GAME_KV_KV_ERROR_NOT_NOW: return "not-now";
  default: return "unavailable";
  }
}

/* The value under `key` into `out` (free it with room_list_u8_free):
 * true and out->ptr NULL when absent; false on an error, in `err`. */
static inline bool rs_kv_get(const char *key, room_list_u8_t *out, respawn_game_kv_kv_error_t *err) {
  room_string_t k = {(uint8_t *)key, strlen(key)};
  room_option_list_u8_t got = {0};
  *out = (room_list_u8_t){0};
  if (!respawn_game_kv_get(&k, &got, err)) return false;
  if (got.is_some) *out = got.val;
  return true;
}

/* Stores `json` (any bytes; the other SDKs read JSON) under `key`. */
static inline bool rs_kv_set(const char *key, const rs_buf *json, respawn_game_kv_kv_error_t *err) {
  room_string_t k = {(uint8_t *)key, strlen(key)};
  room_list_u8_t v = {(uint8_t *)json->ptr, json->len};
  return respawn_game_kv_set(&k, &v, err);
}

static inline bool rs_kv_delete(const char *key, respawn_game_kv_kv_error_t *err) {
  room_string_t k = {(uint8_t *)key, strlen(key)};
  return respawn_game_kv_delete(&k, err);
}

/* ---- reading JSON ---------------------------------------------------------- */

/* A piece of JSON text: a whole value, or a string's raw contents. It
 * points into the text it was read from: use it before freeing that. */
typedef struct {
  const char *p;
  size_t n;
} rs_span;

static inline const char *rs__ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* The end of the JSON value at p (whitespace skipped first), or NULL if
 * it is not one. Nesting is bounded so a hostile message cannot exhaust
 * the stack. */
static inline const char *rs__value(const char *p, const char *end, int depth) {
  p = rs__ws(p, end);
  if (p >= end || depth > 64) return NULL;
  if (*p == '"') {
    for (p++; p < end; p++) {
      if (*p == '\\') {
        if (++p >= end) return NULL;
      } else if (*p == '"') {
        return p + 1;
      } else if ((unsigned char)*p < 0x20) {
        return NULL;
      }
    }
    return NULL;
  }
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    bool object = *p == '{';
    p = rs__ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (object) {
        p = rs__ws(p, end);
        if (p >= end || *p != '"') return NULL;
        p = rs__value(p, end, depth + 1);
        if (!p) return NULL;
        p = rs__ws(p, end);
        if (p >= end || *p != ':') return NULL;
        p++;
      }
      p = rs__value(p, end, depth + 1);
      if (!p) return NULL;
      p = rs__ws(p, end);
      if (p >= end) return NULL;
      if (*p == close) return p + 1;
      if (*p != ',') return NULL;
      p++;
    }
  }
  const char *start = p;
  if (*p == '-') p++;
  if (p < end && *p >= '0' && *p <= '9') {
    /* JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (*p == '0') p++;
    else while (p < end && *p >= '0' && *p <= '9') p++;
    if (p < end && *p == '.') {
      if (++p >= end || *p < '0' || *p > '9') return NULL;
      while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      if (++p < end && (*p == '+' || *p == '-')) p++;
      if (p >= end || *p < '0' || *p > '9') return NULL;
      while (p < end && *p >= '0' && *p <= '9') p++;
    }
    return p;
  }
  p = start;
  static const char *const words[] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(end - p) >= n && memcmp(p, words[i], n) == 0) return p + n;
  }
  return NULL;
}

/* Whether `text` is exactly one JSON value (with whitespace around). */
static inline bool rs_json_valid(const uint8_t *text, size_t len) {
  const char *end = (const char *)text + len;
  const char *p = rs__value((const char *)text, end, 0);
  return p && rs__ws(p, end) == end;
}

/* Walks the members of an object or the elements of an array. */
typedef struct {
  const char *p, *end;
  bool object, done, bad;
} rs_iter;

/* Starts walking `v`; false if it is not an object (or array, when
 * `array`). */
static inline bool rs_json_open(rs_span v, bool array, rs_iter *it) {
  const char *p = rs__ws(v.p, v.p + v.n);
  *it = (rs_iter){.end = v.p + v.n, .object = !array};
  if (p >= it->end || *p != (array ? '[' : '{')) return false;
  it->p = rs__ws(p + 1, it->end);
  if (it->p < it->end && *it->p == (array ? ']' : '}')) it->done = true;
  return true;
}

/* The next member (its key's raw contents and its value) or element;
 * false at the end, or with `bad` set on broken JSON. */
static inline bool rs_json_next(rs_iter *it, rs_span *key, rs_span *value) {
  if (it->done || it->bad) return false;
  const char *p = rs__ws(it->p, it->end);
  if (it->object) {
    const char *k = rs__value(p, it->end, 1);
    if (!k || *p != '"') return (it->bad = true, false);
    if (key) *key = (rs_span){p + 1, (size_t)(k - p - 2)};
    p = rs__ws(k, it->end);
    if (p >= it->end || *p != ':') return (it->bad = true, false);
    p = rs__ws(p + 1, it->end);
  }
  const char *v = rs__value(p, it->end, 1);
  if (!v) return (it->bad = true, false);
  *value = (rs_span){p, (size_t)(v - p)};
  p = rs__ws(v, it->end);
  if (p < it->end && *p == ',') {
    it->p = p + 1;
  } else if (p < it->end && *p == (it->object ? '}' : ']')) {
    it->done = true;
  } else {
    it->bad = true;
  }
  return true;
}

/* The whole text as a span. */
static inline rs_span rs_json_text(const uint8_t *text, size_t len) { return (rs_span){(const char *)text, len}; }

/* Whether a key (raw contents) or a string value equals `s`. */
static inline bool rs_key_is(rs_span key, const char *s) { return key.n == strlen(s) && memcmp(key.p, s, key.n) == 0; }
static inline bool rs_json_is_string(rs_span v, const char *s) {
  return v.n == strlen(s) + 2 && v.p[0] == '"' && memcmp(v.p + 1, s, v.n - 2) == 0;
}
static inline bool rs_json_is_null(rs_span v) { return v.n == 4 && memcmp(v.p, "null", 4) == 0; }

/* An integer value (no fraction or exponent) that fits an int64. */
static inline bool rs_json_int(rs_span v, int64_t *out) {
  const char *p = v.p, *end = v.p + v.n;
  bool neg = p < end && *p == '-';
  if (neg) p++;
  if (p >= end) return false;
  uint64_t n = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9') return false;
    uint64_t d = (uint64_t)(*p - '0');
    if (n > (UINT64_MAX - d) / 10) return false;
    n = n * 10 + d;
  }
  if (neg ? n > (uint64_t)INT64_MAX + 1 : n > (uint64_t)INT64_MAX) return false;
  *out = neg ? (int64_t)(0 - n) : (int64_t)n;
  return true;
}

static inline void rs__utf8(char *out, size_t *o, uint32_t c) {
  if (c < 0x80) {
    out[(*o)++] = (char)c;
  } else if (c < 0x800) {
    out[(*o)++] = (char)(0xC0 | (c >> 6));
    out[(*o)++] = (char)(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out[(*o)++] = (char)(0xE0 | (c >> 12));
    out[(*o)++] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[(*o)++] = (char)(0x80 | (c & 0x3F));
  } else {
    out[(*o)++] = (char)(0xF0 | (c >> 18));
    out[(*o)++] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[(*o)++] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[(*o)++] = (char)(0x80 | (c & 0x3F));
  }
}

static inline bool rs__hex4(const char *p, const char *end, uint32_t *out) {
  if (end - p < 4) return false;
  uint32_t c = 0;
  for (int i = 0; i < 4; i++) {
    char h = p[i];
    c <<= 4;
    if (h >= '0' && h <= '9') c |= (uint32_t)(h - '0');
    else if (h >= 'a' && h <= 'f') c |= (uint32_t)(h - 'a' + 10);
    else if (h >= 'A' && h <= 'F') c |= (uint32_t)(h - 'A' + 10);
    else return false;
  }
  *out = c;
  return true;
}

/* A string value, unescaped into out (NUL-terminated, at most cap-1
 * bytes); false if `v` is not a string or does not fit. */
static inline bool rs_json_string(rs_span v, char *out, size_t cap) {
  if (v.n < 2 || v.p[0] != '"' || cap == 0) return false;
  const char *p = v.p + 1, *end = v.p + v.n - 1;
  size_t o = 0;
  while (p < end) {
    /* Room for one more byte and the NUL; a \u escape checks its own. */
    if (o + 2 > cap) return false;
    if (*p != '\\') {
      out[o++] = *p++;
      continue;
    }
    if (++p >= end) return false;
    char e = *p++;
    switch (e) {
    case '"': case '\\': case '/': out[o++] = e; break;
    case 'b': out[o++] = '\b'; break;
    case 'f': out[o++] = '\f'; break;
    case 'n': out[o++] = '\n'; break;
    case 'r': out[o++] = '\r'; break;
    case 't': out[o++] = '\t'; break;
    case 'u': {
      uint32_t c;
      if (!rs__hex4(p, end, &c)) return false;
      p += 4;
      /* A lone low surrogate is no character: its bytes would not be UTF-8. */
      if (c >= 0xDC00 && c <= 0xDFFF) return false;
      if (c >= 0xD800 && c < 0xDC00) {
        uint32_t lo;
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !rs__hex4(p + 2, end, &lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
        p += 6;
        c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (o + (c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4) + 1 > cap) return false;
      rs__utf8(out, &o, c);
      break;
    }
    default: return false;
    }
  }
  out[o] = 0;
  return true;
}

#endif
