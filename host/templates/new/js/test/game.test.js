import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestRoom } from '@respawn/guest-sdk/testing';
import Room from '../src/game.js';

test('a line reaches everyone and is counted', () => {
  const room = new TestRoom(Room);
  room.join(1, 'ann');
  room.join(2, 'bob');
  room.clear();
  room.message(1, { say: 'hello' });
  assert.deepEqual(room.received(2), [{ type: 'said', from: 1, text: 'hello' }]);
  assert.equal(room.game.lines, 1);
  assert.throws(() => room.message(1, { say: ' ' }), { code: 'bad-line' });
  assert.throws(() => room.message(1, { shout: 'x' }), { code: 'invalid-message' });
});
