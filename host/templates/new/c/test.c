/* Native unit tests of {{name}}'s logic (guest-sdk/c/testing.h). */
#include "testing.h"

int main(void) {
  rt_init();
  RT_CHECK(rt_join(1, "ann", NULL));
  RT_CHECK(rt_join(2, "bob", NULL));
  rt_clear();
  RT_CHECK(rt_message(1, "{\"say\":\"hello\"}"));
  RT_CHECK(rt_last_for(2) && strcmp(rt_last_for(2), "{\"type\":\"said\",\"from\":1,\"text\":\"hello\"}") == 0);
  RT_CHECK(!rt_message(1, "{\"say\":\"\"}") && strcmp(rt_code(), "bad-line") == 0);
  RT_CHECK(!rt_message(1, "{\"shout\":\"x\"}") && strcmp(rt_code(), "invalid-message") == 0);
  RT_CHECK(rt_swap());
  if (rt_failures) return 1;
  printf("{{name}}: all checks passed\n");
  return 0;
}
