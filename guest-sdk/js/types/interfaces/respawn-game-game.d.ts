/// <reference path="./respawn-game-types.d.ts" />
declare module 'respawn:game/game@0.2.0' {
  /**
   * Called once when the room is created. `config` is JSON text (the
   * game's section of the host config, or `{}`).
   */
  export function init(room: string, config: Uint8Array): void;
  /**
   * A player asks to join; a rejection refuses the join and the player
   * sees it. Once accepted, the player is a member of the room by the
   * time this call's effects are delivered, so a broadcast from here
   * reaches the newcomer too (use `except` to skip them).
   */
  export function onJoin(player: Player): void;
  /**
   * A player left or was disconnected.
   */
  export function onLeave(player: PlayerId): void;
  /**
   * A player's message (JSON text); a rejection is reported to that
   * player and leaves the room running.
   */
  export function onMessage(player: PlayerId, payload: Uint8Array): void;
  /**
   * The periodic tick requested with `set-tick-interval`.
   */
  export function onTick(nowMs: bigint): void;
  /**
   * The room's whole state, for hot swap, supervision and replay.
   */
  export function snapshot(): Uint8Array;
  /**
   * Replaces the room's state with one produced by `snapshot`, possibly
   * by an older version of the game.
   */
  export function restore(state: Uint8Array): void;
  export type Player = import('respawn:game/types@0.2.0').Player;
  export type PlayerId = import('respawn:game/types@0.2.0').PlayerId;
  export type Rejection = import('respawn:game/types@0.2.0').Rejection;
}
