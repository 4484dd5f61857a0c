// Tic-tac-toe in JavaScript: the same rules, messages and state as the
// Rust guest (guests/tictactoe), so the same clients play it and a live
// room can be swapped between the two with its board.
//
// The first two players to join take X and O; later players watch and
// take a seat when one frees up. Every change broadcasts the whole board.
// Wins are counted in the game's storage (per verified user, else per
// display name) and a won game's `state` carries the winner's total.

import { Reject, INVALID_MESSAGE } from '@respawn/guest-sdk';

/** Most spectators one room accepts beside its two players. */
export const MAX_SPECTATORS = 32;

const LINES = [
  [0, 1, 2],
  [3, 4, 5],
  [6, 7, 8],
  [0, 3, 6],
  [1, 4, 7],
  [2, 5, 8],
  [0, 4, 8],
  [2, 4, 6],
];
const MARKS = ['X', 'O'];
const seatOf = (mark) => (mark === 'X' ? 0 : 1);
const other = (mark) => (mark === 'X' ? 'O' : 'X');

/** Where a member's wins are counted: users and names never share a key. */
function winsKey(member) {
  return member.user_id !== undefined ? `wins/user/${member.user_id}` : `wins/name/${member.name}`;
}

/** What other players see of a seat. */
function publicMember(m) {
  return m ? { id: m.id, name: m.name } : null;
}

/**
 * Reads a message the way the Rust guest's serde does: a move has exactly
 * `action` and an integer `cell`; a restart ignores any other field. (One
 * difference JavaScript cannot see: JSON.parse reads `1.0` as 1, which
 * serde refuses as a cell.)
 */
function parseAction(msg) {
  const bad = (why) => new Reject(INVALID_MESSAGE, `this game cannot read that message: ${why}`);
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw bad('expected an object with an `action`');
  switch (msg.action) {
    case 'move':
      if (!('cell' in msg)) throw bad('missing field `cell`');
      if (!Number.isSafeInteger(msg.cell)) throw bad('`cell` must be an integer');
      if (Object.keys(msg).some((f) => f !== 'action' && f !== 'cell')) throw bad('unknown field');
      return { action: 'move', cell: msg.cell };
    case 'restart':
      return { action: 'restart' };
    case undefined:
      throw bad('missing field `action`');
    default:
      throw bad(`unknown action ${JSON.stringify(msg.action)}`);
  }
}

export default class TicTacToe {
  constructor() {
    /** Cells 0..9, row by row: "X", "O" or null. */
    this.board = Array(9).fill(null);
    /** Seats for X and O: { id, name, user_id? } or null. */
    this.seats = [null, null];
    /** Everyone else, in arrival order. */
    this.spectators = [];
    this.turn = null;
    /** waiting | playing | won | draw */
    this.status = 'waiting';
    this.winner = null;
    this.line = null;
    /** Finished games in this room. */
    this.games = 0;
    /** The winner's total wins once `status` is `won`, if storage counted it. */
    this.winner_wins = null;
  }

  markOf(id) {
    return MARKS.find((m) => this.seats[seatOf(m)]?.id === id);
  }

  role(id) {
    return this.markOf(id) ?? 'spectator';
  }

  seatFreePlayers() {
    for (const mark of MARKS) {
      if (this.seats[seatOf(mark)] === null && this.spectators.length > 0) {
        this.seats[seatOf(mark)] = this.spectators.shift();
      }
    }
  }

  newGame() {
    this.board = Array(9).fill(null);
    this.winner = null;
    this.line = null;
    this.winner_wins = null;
    if (this.seats.every((s) => s !== null)) {
      this.status = 'playing';
      this.turn = 'X';
    } else {
      this.status = 'waiting';
      this.turn = null;
    }
  }

  broadcastState(ctx) {
    ctx.broadcast({
      type: 'state',
      board: this.board,
      turn: this.turn,
      status: this.status,
      winner: this.winner,
      line: this.line,
      players: { X: publicMember(this.seats[0]), O: publicMember(this.seats[1]) },
      spectators: this.spectators.length,
      games: this.games,
      winner_wins: this.winner_wins,
    });
  }

  tellRoles(ctx) {
    for (const m of this.seats) if (m) ctx.send(m.id, { type: 'seat', mark: this.role(m.id) });
  }

  /** Adds the win to `mark`'s stored count; storage failing never spoils the game. */
  countWin(ctx, mark) {
    const seat = this.seats[seatOf(mark)];
    if (!seat) return null;
    const key = winsKey(seat);
    try {
      const wins = ctx.kv.get(key);
      if (wins !== undefined && !(Number.isSafeInteger(wins) && wins >= 0)) {
        throw new Error(`the stored value does not decode: ${JSON.stringify(wins)} is not a count`);
      }
      const total = (wins ?? 0) + 1;
      ctx.kv.set(key, total);
      return total;
    } catch (e) {
      ctx.log('warn', `win not counted under ${key}: ${e.message}`);
      return null;
    }
  }

  play(mark, cell) {
    if (this.status === 'waiting') throw new Reject('waiting', 'waiting for an opponent');
    if (this.status === 'won' || this.status === 'draw') {
      throw new Reject('game-over', 'the game is over: send {"action":"restart"}');
    }
    if (this.turn !== mark) throw new Reject('not-your-turn', "wait for your opponent's move");
    if (cell < 0 || cell > 8) throw new Reject('out-of-range', `cell ${cell} is off the board (0 to 8)`);
    if (this.board[cell] !== null) throw new Reject('cell-taken', `cell ${cell} is already taken`);
    this.board[cell] = mark;
    const line = LINES.find((l) => l.every((c) => this.board[c] === mark));
    if (line) {
      this.status = 'won';
      this.winner = mark;
      this.line = [...line];
      this.turn = null;
      this.games += 1;
    } else if (this.board.every((c) => c !== null)) {
      this.status = 'draw';
      this.turn = null;
      this.games += 1;
    } else {
      this.turn = other(mark);
    }
  }

  onJoin(ctx, player) {
    const member = { id: player.id, name: player.name };
    if (player.user) member.user_id = player.user.userId;
    const free = this.seats.indexOf(null);
    if (free >= 0) {
      this.seats[free] = member;
      if (this.seats.every((s) => s !== null)) this.newGame();
    } else if (this.spectators.length < MAX_SPECTATORS) {
      this.spectators.push(member);
    } else {
      throw new Reject('room-full', 'this room is full');
    }
    ctx.send(player.id, { type: 'seat', mark: this.role(player.id) });
    this.broadcastState(ctx);
  }

  onLeave(ctx, id) {
    this.spectators = this.spectators.filter((s) => s.id !== id);
    const mark = this.markOf(id);
    if (mark === undefined) {
      this.broadcastState(ctx);
      return;
    }
    this.seats[seatOf(mark)] = null;
    this.seatFreePlayers();
    if (this.status === 'playing') {
      // The pair changed: the unfinished game is void.
      this.newGame();
    } else if (this.seats.some((s) => s === null)) {
      this.status = 'waiting';
      this.turn = null;
    }
    this.tellRoles(ctx);
    this.broadcastState(ctx);
  }

  onMessage(ctx, from, msg) {
    const action = parseAction(msg);
    const mark = this.markOf(from);
    if (mark === undefined) throw new Reject('spectator', 'spectators cannot play');
    if (action.action === 'move') {
      this.play(mark, action.cell);
      if (this.status === 'won') this.winner_wins = this.countWin(ctx, mark);
    } else {
      if (this.status === 'playing' || this.status === 'waiting') {
        throw new Reject('game-not-over', 'finish this game first');
      }
      this.newGame();
    }
    this.broadcastState(ctx);
  }
}
