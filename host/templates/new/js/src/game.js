// {{name}}: players say lines to everyone in the room. A starting point:
// change the state, the messages and the handlers.

import { Reject, INVALID_MESSAGE } from '@respawn/guest-sdk';

export default class Room {
  // The state: the instance's own fields, kept as JSON across hot swaps,
  // restarts and replays.
  constructor() {
    this.lines = 0;
  }

  onJoin(ctx, player) {
    ctx.send(player.id, { type: 'hello', lines: this.lines });
    ctx.broadcastExcept(player.id, { type: 'joined', name: player.name });
  }

  onMessage(ctx, from, msg) {
    if (typeof msg?.say !== 'string' || Object.keys(msg).length !== 1) {
      throw new Reject(INVALID_MESSAGE, 'send {"say": "..."}');
    }
    const text = msg.say.trim();
    if (text.length === 0 || [...text].length > 200) throw new Reject('bad-line', 'say 1 to 200 characters');
    this.lines += 1;
    ctx.broadcast({ type: 'said', from, text });
  }
}
