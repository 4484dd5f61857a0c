/* Native unit tests of the C tictactoe: the Rust guest's cases. */
#include "testing.h"

static void mv(uint64_t p, int cell) {
  char json[64];
  snprintf(json, sizeof json, "{\"action\":\"move\",\"cell\":%d}", cell);
  RT_CHECK(rt_message(p, json));
}

static const char *refused(uint64_t p, const char *json) {
  RT_CHECK(!rt_message(p, json));
  return rt_code();
}

static void two_players(void) {
  rt_init();
  RT_CHECK(rt_restore("{}"));
  RT_CHECK(rt_join(1, "xena", NULL));
  RT_CHECK(rt_join(2, "otto", NULL));
  rt_clear();
}

static void x_wins(void) {
  int moves[][2] = {{1, 0}, {2, 3}, {1, 1}, {2, 4}, {1, 2}};
  for (int i = 0; i < 5; i++) mv((uint64_t)moves[i][0], moves[i][1]);
}

int main(void) {
  /* A win, the game over, a restart. */
  two_players();
  x_wins();
  const char *last = rt_last_for(2);
  RT_CHECK(last && strstr(last, "\"status\":\"won\"") && strstr(last, "\"winner\":\"X\"") && strstr(last, "\"line\":[0,1,2]"));
  RT_CHECK(last && strstr(last, "\"winner_wins\":1"));
  RT_CHECK(strcmp(refused(2, "{\"action\":\"move\",\"cell\":5}"), "game-over") == 0);
  RT_CHECK(rt_message(2, "{\"action\":\"restart\"}"));
  last = rt_last_for(2);
  RT_CHECK(last && strstr(last, "\"status\":\"playing\"") && strstr(last, "\"games\":1"));
  RT_CHECK(strcmp(rt_kv_get("wins/name/xena"), "1") == 0);

  /* Illegal moves and messages this game cannot read. */
  two_players();
  RT_CHECK(strcmp(refused(2, "{\"action\":\"move\",\"cell\":0}"), "not-your-turn") == 0);
  RT_CHECK(strcmp(refused(1, "{\"action\":\"move\",\"cell\":9}"), "out-of-range") == 0);
  RT_CHECK(strcmp(refused(1, "{\"action\":\"move\",\"cell\":-1}"), "out-of-range") == 0);
  mv(1, 4);
  RT_CHECK(strcmp(refused(2, "{\"action\":\"move\",\"cell\":4}"), "cell-taken") == 0);
  const char *bad[] = {"{\"action\":\"fly\"}", "{\"action\":\"move\"}", "{\"action\":\"move\",\"cell\":1.5}",
                       "{\"action\":\"move\",\"cell\":1,\"x\":2}", "{\"action\":\"move\",\"cell\":01}", "[1]", "{not json",
                       "{\"action\":\"move\",\"cell\":1} trailing", "{\"action\":\"move\",\"action\":\"move\",\"cell\":1}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) RT_CHECK(strcmp(refused(2, bad[i]), "invalid-message") == 0);
  /* As serde reads it: a restart with other fields is a restart. */
  RT_CHECK(strcmp(refused(2, "{\"action\":\"restart\",\"cell\":1}"), "game-not-over") == 0);
  /* A rejection cut at its 511-byte limit ends on a whole character. */
  rs_buf euros = {0};
  rs_buf_puts(&euros, "xy"); /* 2 + 3n bytes: byte 511 falls inside a character */
  for (int i = 0; i < 200; i++) rs_buf_puts(&euros, "\xe2\x82\xac");
  rs_rejection cut = {0};
  rs_reject(&cut, "c", "%s", euros.ptr);
  RT_CHECK(cut.message.len == 509 && (cut.message.ptr[cut.message.len - 1] & 0xC0) == 0x80);
  RT_CHECK(cut.message.ptr[cut.message.len - 3] == (uint8_t)0xe2);
  rs_buf_free(&euros);
  room_string_free(&cut.code);
  room_string_free(&cut.message);
  /* A lone surrogate in a string is not read as text. */
  char out[16];
  RT_CHECK(!rs_json_string((rs_span){"\"\\udc00\"", 8}, out, sizeof out));
  RT_CHECK(rs_json_string((rs_span){"\"\\u00e9\"", 8}, out, sizeof out) && strcmp(out, "\xc3\xa9") == 0);

  /* A spectator, who takes the seat a player leaves. */
  RT_CHECK(rt_join(3, "sam", NULL));
  RT_CHECK(strcmp(rt_last_for(3), "{\"type\":\"state\",\"board\":[null,null,null,null,\"X\",null,null,null,null],\"turn\":\"O\",\"status\":\"playing\",\"winner\":null,\"line\":null,\"players\":{\"X\":{\"id\":1,\"name\":\"xena\"},\"O\":{\"id\":2,\"name\":\"otto\"}},\"spectators\":1,\"games\":0,\"winner_wins\":null}") == 0);
  RT_CHECK(strcmp(refused(3, "{\"action\":\"move\",\"cell\":0}"), "spectator") == 0);
  rt_clear();
  rt_leave(2);
  const char *first = NULL;
  for (int i = 0; i < rt_n_effects && !first; i++)
    if (rt_effects[i].to == 3 || rt_effects[i].to == -1) first = rt_effects[i].text;
  RT_CHECK(first && strcmp(first, "{\"type\":\"seat\",\"mark\":\"O\"}") == 0);

  /* The state survives a swap, and the Rust guest's snapshot restores. */
  two_players();
  mv(1, 4);
  RT_CHECK(rt_swap());
  RT_CHECK(strcmp(refused(1, "{\"action\":\"move\",\"cell\":0}"), "not-your-turn") == 0);
  RT_CHECK(rt_restore("{\"board\":[null,null,null,null,\"X\",null,null,null,null],\"seats\":[{\"id\":1,\"name\":\"x\\u00e9na \\\"the\\\" first\"},{\"id\":2,\"name\":\"otto\",\"user_id\":\"u-2\"}],\"spectators\":[],\"turn\":\"O\",\"status\":\"playing\",\"winner\":null,\"line\":null,\"games\":3,\"winner_wins\":null,\"future_field\":[1,{\"a\":2}]}"));
  rt_clear();
  mv(2, 0);
  last = rt_last_for(1);
  RT_CHECK(last && strstr(last, "\"board\":[\"O\",null,null,null,\"X\"") && strstr(last, "\"games\":3"));
  RT_CHECK(last && strstr(last, "\"name\":\"x\xc3\xa9na \\\"the\\\" first\""));
  RT_CHECK(!rt_restore("{\"board\":[1,2]}"));
  RT_CHECK(!rt_restore("not json"));

  /* A win stands when storage fails. */
  two_players();
  rt_kv_quota = 0;
  x_wins();
  last = rt_last_for(2);
  RT_CHECK(last && strstr(last, "\"status\":\"won\"") && strstr(last, "\"winner_wins\":null"));
  RT_CHECK(rt_logged(RS_WARN, "wins/name/xena"));
  rt_kv_quota = -1;

  /* A verified player is counted by user id. */
  two_players();
  RT_CHECK(rt_restore("{}"));
  RT_CHECK(rt_join(1, "xena", "u-7"));
  RT_CHECK(rt_join(2, "otto", NULL));
  x_wins();
  RT_CHECK(rt_kv_get("wins/user/u-7") && strcmp(rt_kv_get("wins/user/u-7"), "1") == 0);
  last = rt_last_for(2);
  RT_CHECK(last && strstr(last, "\"X\":{\"id\":1,\"name\":\"xena\"}"));

  if (rt_failures) {
    fprintf(stderr, "%d checks failed\n", rt_failures);
    return 1;
  }
  printf("tictactoe-c: all checks passed\n");
  return 0;
}
