/// <reference path="./respawn-game-types.d.ts" />
declare module 'respawn:game/host@0.2.0' {
  /**
   * Sends `payload` (JSON text) to one player of this room.
   */
  export function send(to: PlayerId, payload: Uint8Array): void;
  /**
   * Sends `payload` (JSON text) to every player of this room, optionally
   * except one (typically the sender).
   */
  export function broadcast(payload: Uint8Array, except: PlayerId | undefined): void;
  /**
   * Removes a player from the room; the player is told `reason`.
   */
  export function kick(player: PlayerId, reason: string): void;
  /**
   * Writes a line to the host's log, tagged with the game and room.
   */
  export function log(level: Level, message: string): void;
  /**
   * The room's clock, in milliseconds since the Unix epoch. Fixed for
   * the duration of one guest call.
   */
  export function nowMs(): bigint;
  /**
   * A random value from the room's seeded generator.
   */
  export function randomU64(): bigint;
  /**
   * Asks the host to call `on-tick` every `ms` milliseconds; 0 stops
   * ticking. The host clamps the interval to its configured minimum.
   */
  export function setTickInterval(ms: number): void;
  export type PlayerId = import('respawn:game/types@0.2.0').PlayerId;
  export type Level = import('respawn:game/types@0.2.0').Level;
}
