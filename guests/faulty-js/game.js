// Misbehaves on request, for the end-to-end tests: a JavaScript room must
// be contained exactly like a Rust one (restart from its checkpoint, crash
// capsule, the engine's message in the log). Every message is
// `{"do": <what>}`; anything else is counted and answered with the count.

import { Reject } from '@respawn/guest-sdk';

export default class Faulty {
  constructor() {
    this.count = 0;
  }

  onJoin(ctx, player) {
    ctx.send(player.id, { count: this.count });
  }

  onMessage(ctx, from, msg) {
    switch (msg && msg.do) {
      case 'throw':
        throwDeep();
        break;
      case 'throw-coded':
        // An Error that happens to carry a `code` is still a bug, not a rejection.
        throw Object.assign(new Error('an error with a code field'), { code: 'sneaky' });
      case 'null':
        return msg.missing.field;
      case 'loop':
        for (;;) {}
      case 'alloc': {
        const hoard = [];
        for (;;) hoard.push(new ArrayBuffer(8 << 20));
      }
      case 'reject':
        throw new Reject('refused', 'the game refused this on purpose');
      case 'kv-bad-key':
        try {
          ctx.kv.set('', 1);
        } catch (e) {
          ctx.send(from, { kv_error: e.code });
        }
        return;
      case 'entropy':
        // Date.now() and Math.random() come from the room's clock and
        // seeded streams, like ctx.nowMs() and ctx.random().
        ctx.send(from, { now: Date.now(), ctx_now: ctx.nowMs(), random: Math.random(), ctx_random: ctx.random() });
        return;
      default:
        this.count += 1;
        ctx.send(from, { count: this.count });
    }
  }
}

function throwDeep() {
  throw new TypeError('the guest threw on purpose');
}
