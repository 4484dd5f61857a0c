import type { GameClass, Game, PlayerId, Level } from './index.js';
export { Reject } from './index.js';

export const KV_MAX_VALUE_BYTES: number;

/** In-memory game storage with the host's limits; `quota` in bytes or null. */
export class MemoryKv {
  quota: number | null;
  keys(): string[];
  get<T = unknown>(key: string): T | undefined;
  set(key: string, value: unknown): void;
}

/** What a call did. */
export type Effect =
  | { kind: 'send'; to: PlayerId; data: unknown }
  | { kind: 'broadcast'; except?: PlayerId; data: unknown }
  | { kind: 'kick'; player: PlayerId; reason: string }
  | { kind: 'log'; level: Level; message: string };

/** One room of a game, driven by a unit test. */
export class TestRoom<G extends Game = Game> {
  constructor(Game: GameClass, options?: { kv?: MemoryKv; room?: string; config?: unknown; seed?: bigint; nowMs?: number });
  readonly kv: MemoryKv;
  effects: Effect[];
  clock: number;
  tickMs: number;
  readonly game: G;
  join(id: PlayerId, name: string, user?: { userId: string; claims?: Record<string, unknown> } | null): void;
  leave(id: PlayerId): void;
  message(id: PlayerId, msg: unknown): void;
  tick(ms?: number): void;
  received(id: PlayerId): any[];
  clear(): void;
  swap(Next?: GameClass): any;
}
