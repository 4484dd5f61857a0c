/// <reference path="./interfaces/respawn-game-game.d.ts" />
/// <reference path="./interfaces/respawn-game-host.d.ts" />
/// <reference path="./interfaces/respawn-game-kv.d.ts" />
/// <reference path="./interfaces/respawn-game-types.d.ts" />
declare module 'respawn:game/room@0.2.0' {
  export type * as RespawnGameHost020 from 'respawn:game/host@0.2.0'; // import respawn:game/host@0.2.0
  export type * as RespawnGameKv020 from 'respawn:game/kv@0.2.0'; // import respawn:game/kv@0.2.0
  export type * as RespawnGameTypes020 from 'respawn:game/types@0.2.0'; // import respawn:game/types@0.2.0
  export * as game from 'respawn:game/game@0.2.0'; // export respawn:game/game@0.2.0
}
