// Unit tests of the game's logic in Node, without wasm: the Rust guest's
// tests, case for case (guests/tictactoe/src/lib.rs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestRoom, MemoryKv } from '@respawn/guest-sdk/testing';
import TicTacToe from './game.js';

const mv = (cell) => ({ action: 'move', cell });
const code = (f) => {
  try {
    f();
  } catch (e) {
    return e.code;
  }
  assert.fail('expected a rejection');
};

function roomWithTwo(opts) {
  const room = new TestRoom(TicTacToe, opts);
  room.join(1, 'xena');
  room.join(2, 'otto');
  room.clear();
  return room;
}

/** X takes the top row while O plays the middle one. */
function xWins(room) {
  for (const [p, c] of [[1, 0], [2, 3], [1, 1], [2, 4], [1, 2]]) room.message(p, mv(c));
  return room.received(2).at(-1);
}

test('x wins a row and everyone sees it', () => {
  const room = roomWithTwo();
  const last = xWins(room);
  assert.equal(last.status, 'won');
  assert.equal(last.winner, 'X');
  assert.deepEqual(last.line, [0, 1, 2]);
  assert.equal(code(() => room.message(2, mv(5))), 'game-over');
  room.message(2, { action: 'restart' });
  assert.equal(room.game.status, 'playing');
  assert.equal(room.game.games, 1);
});

test('a draw is detected', () => {
  const room = roomWithTwo();
  for (const [p, c] of [[1, 0], [2, 1], [1, 2], [2, 4], [1, 3], [2, 5], [1, 7], [2, 6], [1, 8]]) room.message(p, mv(c));
  assert.equal(room.game.status, 'draw');
  assert.equal(room.game.winner, null);
});

test('illegal moves are rejected and change nothing', () => {
  const room = roomWithTwo();
  assert.equal(code(() => room.message(2, mv(0))), 'not-your-turn');
  assert.equal(code(() => room.message(1, mv(9))), 'out-of-range');
  assert.equal(code(() => room.message(1, mv(-1))), 'out-of-range');
  room.message(1, mv(4));
  assert.equal(code(() => room.message(2, mv(4))), 'cell-taken');
  for (const bad of [{ action: 'fly' }, { action: 'move' }, { action: 'move', cell: 1.5 }, { action: 'move', cell: 1, x: 2 }, [1], 'raw:{not json']) {
    assert.equal(code(() => room.message(2, bad)), 'invalid-message', JSON.stringify(bad));
  }
  // As serde reads it: a restart with other fields is a restart.
  assert.equal(code(() => room.message(2, { action: 'restart', cell: 1 })), 'game-not-over');
  assert.equal(room.game.board.filter((c) => c !== null).length, 1);
  assert.equal(room.game.turn, 'O');
});

test('a third player watches and takes a free seat', () => {
  const room = roomWithTwo();
  room.join(3, 'sam');
  assert.deepEqual(room.received(3)[0], { type: 'seat', mark: 'spectator' });
  assert.equal(code(() => room.message(3, mv(0))), 'spectator');
  room.message(1, mv(0));
  room.clear();
  room.leave(2);
  assert.deepEqual(room.received(3)[0], { type: 'seat', mark: 'O' });
  assert.equal(room.game.status, 'playing');
  assert.ok(room.game.board.every((c) => c === null), 'new seats, new game');
});

test('wins are counted in storage across games and rooms', () => {
  const room = roomWithTwo();
  assert.equal(xWins(room).winner_wins, 1);
  room.message(2, { action: 'restart' });
  assert.equal(room.received(2).at(-1).winner_wins, null);
  assert.equal(xWins(room).winner_wins, 2);
  assert.equal(room.kv.get('wins/name/xena'), 2);
  assert.deepEqual(room.kv.keys(), ['wins/name/xena'], 'the loser is not counted');

  const other = new TestRoom(TicTacToe, { kv: room.kv });
  other.join(1, 'xena');
  other.join(2, 'otto');
  assert.equal(xWins(other).winner_wins, 3);
  room.swap();
  assert.equal(room.game.winner_wins, 2, 'the total survives a swap');
});

test('a verified player is counted by user id, which others do not see', () => {
  const room = new TestRoom(TicTacToe);
  room.join(1, 'xena', { userId: 'u-7' });
  room.join(2, 'otto');
  const last = xWins(room);
  assert.equal(last.winner_wins, 1);
  assert.deepEqual(last.players.X, { id: 1, name: 'xena' });
  assert.deepEqual(room.kv.keys(), ['wins/user/u-7']);
});

test('a win stands when storage fails', () => {
  const kv = new MemoryKv();
  const room = roomWithTwo({ kv });
  kv.quota = 4;
  const last = xWins(room);
  assert.equal(last.status, 'won');
  assert.equal(last.winner, 'X');
  assert.equal(last.winner_wins, null);
  assert.ok(
    room.effects.some((e) => e.kind === 'log' && e.level === 'warn' && e.message.includes('wins/name/xena')),
    'the operator is told',
  );
  room.message(2, { action: 'restart' });
  assert.equal(room.game.status, 'playing');

  kv.quota = null;
  kv.set('wins/name/xena', 'many');
  assert.equal(xWins(room).winner_wins, null, 'an unreadable count is left alone');
  assert.equal(kv.get('wins/name/xena'), 'many');
});

test('state survives a swap', () => {
  const room = roomWithTwo();
  room.message(1, mv(4));
  room.swap();
  assert.equal(room.game.board[4], 'X');
  assert.equal(code(() => room.message(1, mv(0))), 'not-your-turn');
});

test('the state is the Rust guest\'s: a Rust snapshot restores and plays on', () => {
  // What guests/tictactoe's serde writes mid-game (X on 4, O to move).
  const rust = {
    board: [null, null, null, null, 'X', null, null, null, null],
    seats: [{ id: 1, name: 'xena' }, { id: 2, name: 'otto', user_id: 'u-2' }],
    spectators: [],
    turn: 'O',
    status: 'playing',
    winner: null,
    line: null,
    games: 3,
    winner_wins: null,
  };
  const room = roomWithTwo();
  room.runner.restore(new TextEncoder().encode(JSON.stringify(rust)));
  room.members = new Set([1, 2]);
  assert.equal(code(() => room.message(1, mv(0))), 'not-your-turn');
  room.message(2, mv(0));
  const back = JSON.parse(new TextDecoder().decode(room.runner.snapshot()));
  assert.deepEqual(Object.keys(back).sort(), Object.keys(rust).sort(), 'the same fields, no more');
  assert.deepEqual(back.seats[1], { id: 2, name: 'otto', user_id: 'u-2' });
  assert.equal(back.board[0], 'O');
  assert.equal(back.games, 3);
});
