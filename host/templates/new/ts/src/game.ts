// {{name}}: players say lines to everyone in the room. A starting point:
// change the state, the messages and the handlers.

import { Reject, INVALID_MESSAGE, type Ctx, type Game, type Player, type PlayerId } from '@respawn/guest-sdk';

/** What players send. */
interface Say {
  say: string;
}

function isSay(msg: unknown): msg is Say {
  return typeof msg === 'object' && msg !== null && Object.keys(msg).length === 1 && typeof (msg as Say).say === 'string';
}

export default class Room implements Game {
  /** Lines said in this room: the state is the instance's own fields, kept as JSON. */
  lines = 0;

  onJoin(ctx: Ctx, player: Player): void {
    ctx.send(player.id, { type: 'hello', lines: this.lines });
    ctx.broadcastExcept(player.id, { type: 'joined', name: player.name });
  }

  onMessage(ctx: Ctx, from: PlayerId, msg: unknown): void {
    if (!isSay(msg)) throw new Reject(INVALID_MESSAGE, 'send {"say": "..."}');
    const text = msg.say.trim();
    if (text.length === 0 || [...text].length > 200) throw new Reject('bad-line', 'say 1 to 200 characters');
    this.lines += 1;
    ctx.broadcast({ type: 'said', from, text });
  }
}
