declare module 'respawn:game/kv@0.2.0' {
  /**
   * The value under `key`, if any.
   */
  export function get(key: string): Uint8Array | undefined;
  /**
   * Sets `key` to `value`.
   */
  export function set(key: string, value: Uint8Array): void;
  /**
   * Removes `key` (no error if it was absent).
   */
  export { _delete as delete };
  function _delete(key: string): void;
  /**
   * Keys that start with `prefix`, in byte order, after `start-after`
   * when given, at most `limit` of them (the host caps it at 1000).
   */
  export function list(prefix: string, startAfter: string | undefined, limit: number): Array<string>;
  /**
   * Why a storage call failed.
   */
  export type KvError = KvErrorInvalidKey | KvErrorTooLarge | KvErrorQuotaExceeded | KvErrorNotNow | KvErrorUnavailable;
  /**
   * A key is 1 to 256 bytes of UTF-8.
   */
  export interface KvErrorInvalidKey {
    tag: 'invalid-key',
  }
  /**
   * The value is longer than the host's limit (in bytes).
   */
  export interface KvErrorTooLarge {
    tag: 'too-large',
    val: number,
  }
  /**
   * The game's storage would exceed its quota (in bytes).
   */
  export interface KvErrorQuotaExceeded {
    tag: 'quota-exceeded',
    val: bigint,
  }
  /**
   * Storage is called outside an input (`init`, `snapshot`,
   * `restore`).
   */
  export interface KvErrorNotNow {
    tag: 'not-now',
  }
  /**
   * The host offers no game storage (one run without a database).
   */
  export interface KvErrorUnavailable {
    tag: 'unavailable',
  }
}
