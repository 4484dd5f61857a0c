declare module 'respawn:game/types@0.2.0' {
  /**
   * A player's id, unique within one host process.
   */
  export type PlayerId = bigint;
  /**
   * Who a player is according to the studio's account service: the
   * subject of a join ticket the host verified. Stable across
   * connections, resumes and host restarts, unlike `player-id`.
   */
  export interface Identity {
    /**
     * The ticket's user id.
     */
    userId: string,
    /**
     * The ticket claims the host's config passes to games, as
     * (name, JSON text) pairs.
     */
    claims: Array<[string, string]>,
  }
  /**
   * A player as the guest sees it on join.
   */
  export interface Player {
    id: PlayerId,
    /**
     * Display name chosen by the player, validated by the host
     * (1 to 32 characters, no control characters).
     */
    name: string,
    /**
     * The verified identity, when the player joined with a ticket;
     * `none` on a host that does not require tickets.
     */
    user?: Identity,
  }
  /**
   * Why the guest refused a join or a message. `code` is a short
   * machine-readable word chosen by the game (for example `cell-taken`),
   * `message` is for people.
   */
  export interface Rejection {
    code: string,
    message: string,
  }
  /**
   * Severity of a guest log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
