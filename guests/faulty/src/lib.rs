//! A test-only game that misbehaves on request, to prove the host contains
//! guest failures. Never deploy it.
//!
//! Messages: `{"do": "count"}` replies with a per-room counter;
//! `{"do": "reject"}` returns a rejection; `{"do": "panic"}` traps;
//! `{"do": "loop"}` spins forever; `{"do": "sleep", "secs": N}` sleeps in WASI; `{"do": "alloc", "mb": N}` grabs memory;
//! `{"do": "kick"}` kicks the sender; `{"do": "tick", "ms": N, "spin": M}`
//! starts ticking (each tick spins M million rounds, then broadcasts the
//! room clock); `{"do": "time"}` replies with the host clock and the WASI
//! clock the guest sees; `{"do": "hash_order"}` with the iteration order of
//! a fresh `HashMap`; `{"do": "log", "text": T}` logs T; `{"do": "add", "n": N}` adds to the counter and
//! `{"do": "get"}` reads it; `{"do": "poison"}` makes the next `restore` of
//! this state trap; `{"do": "slow", "ms": N}` makes every later message
//! sleep N ms in WASI first. Game storage: `{"do": "kv_set", "key": K,
//! "value": V}`, `{"do": "kv_get", "key": K}`, `{"do": "kv_del", "key": K}`,
//! `{"do": "kv_list", "prefix": P, "after": A, "limit": N}` and
//! `{"do": "kv_big", "key": K, "bytes": N}` (a string value of N bytes)
//! reply with `{"kv": ...}` or `{"kv_error": code}`. `{"do": "step", "dir":
//! D}` moves on a pad and replies with the position; the sequence up, up,
//! down (and only it) hits a bug that traps, fixed in the `fix` variant.

use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject, export_game};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A counter, so tests can see whether state survived. The `strict`
/// variant refuses to restore a counter of 100 or more.
#[derive(Default, Serialize, Deserialize)]
#[cfg_attr(feature = "strict", serde(try_from = "Unchecked"))]
pub struct Faulty {
    /// The counter `count` messages advance (by 1, or by 10 in `v2`).
    pub count: u64,
    /// Restoring a state with this set traps.
    #[serde(default, deserialize_with = "poison")]
    pub poisoned: bool,
    /// Rounds (in millions) each tick spins.
    #[serde(default)]
    pub spin: u32,
    /// Every message first sleeps this long in WASI (a slow version).
    #[serde(default)]
    pub slow_ms: u64,
    /// The last pad steps (at most three).
    #[serde(default)]
    pub steps: Vec<String>,
    /// The pad position.
    #[serde(default)]
    pub position: i64,
    #[serde(skip)]
    hoard: Vec<Vec<u8>>,
}

fn poison<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let poisoned = bool::deserialize(d)?;
    if poisoned {
        panic!("restore of a poisoned state");
    }
    Ok(false)
}

#[cfg(feature = "strict")]
#[derive(Deserialize)]
struct Unchecked {
    count: u64,
}

#[cfg(feature = "strict")]
impl TryFrom<Unchecked> for Faulty {
    type Error = String;
    fn try_from(u: Unchecked) -> Result<Self, String> {
        if u.count >= 100 {
            return Err(format!("strict: a count of {} cannot be restored", u.count));
        }
        Ok(Faulty {
            count: u.count,
            ..Faulty::default()
        })
    }
}

/// What a test asks for.
#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Order {
    /// Reply with the incremented counter.
    Count,
    /// Set the counter.
    Set { count: u64 },
    /// Refuse the message.
    Reject,
    /// Panic, which traps the instance.
    Panic,
    /// Never return.
    Loop,
    /// Sleep inside WASI (`std::thread::sleep`, a clock poll the host
    /// waits on) for `secs` seconds: wasm does not run meanwhile, so only
    /// a wall-clock bound ends the call.
    Sleep { secs: u64 },
    /// Allocate and touch `mb` MiB.
    Alloc { mb: u32 },
    /// Kick the sender.
    Kick,
    /// Tick every `ms` milliseconds (0 stops), spinning `spin` million
    /// rounds in each tick.
    Tick {
        ms: u32,
        #[serde(default)]
        spin: u32,
    },
    /// Add `n` to the counter and reply with it.
    Add { n: u64 },
    /// Reply with the counter.
    Get,
    /// A step on the pad: `up` or `down`.
    Step { dir: String },
    /// Make `restore` of the state trap from now on.
    Poison,
    /// Reply with `ctx.now_ms()` and `SystemTime::now()` as WASI gives it.
    Time,
    /// Write `text` to the host's log at info level.
    Log { text: String },
    /// Reply with the iteration order of a fresh std `HashMap` of 32 keys,
    /// which depends on the hash seed std gives each new map.
    HashOrder,
    /// From now on, sleep `ms` in WASI at the start of every message.
    Slow { ms: u64 },
    /// Store `value` under `key`.
    KvSet { key: String, value: Value },
    /// Store a string of `bytes` bytes under `key`.
    KvBig { key: String, bytes: usize },
    /// Read `key`.
    KvGet { key: String },
    /// Delete `key`.
    KvDel { key: String },
    /// List keys.
    KvList {
        prefix: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default = "hundred")]
        limit: u32,
    },
}

fn hundred() -> u32 {
    100
}

/// A storage error as a short code, for tests to match.
fn kv_code(e: &respawn_guest_sdk::KvError) -> &'static str {
    use respawn_guest_sdk::KvError as E;
    match e {
        E::InvalidKey => "invalid_key",
        E::TooLarge(_) => "too_large",
        E::QuotaExceeded(_) => "quota_exceeded",
        E::NotNow => "not_now",
        E::Unavailable => "unavailable",
        E::Decode(_) => "decode",
        _ => "other",
    }
}

fn kv_reply(r: Result<Value, respawn_guest_sdk::KvError>) -> Value {
    match r {
        Ok(v) => json!({"kv": v}),
        Err(e) => json!({"kv_error": kv_code(&e)}),
    }
}

impl Game for Faulty {
    type Message = Order;

    fn init(&mut self, _: &mut Ctx, _: &str, config: Value) -> Result<(), String> {
        if config.get("fail_init").and_then(Value::as_bool) == Some(true) {
            return Err("init refused by config".into());
        }
        Ok(())
    }

    fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> {
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, order: Order) -> Result<(), Reject> {
        if self.slow_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.slow_ms));
        }
        match order {
            Order::Slow { ms } => {
                self.slow_ms = ms;
                ctx.send(from, &json!({"slow_ms": ms}));
            }
            Order::Count => {
                self.count += if cfg!(feature = "v2") { 10 } else { 1 };
                ctx.send(from, &json!({"count": self.count}));
            }
            Order::Set { count } => {
                self.count = count;
                ctx.send(from, &json!({"count": self.count}));
            }
            Order::Reject => return Err(Reject::new("asked-to", "rejected on request")),
            Order::Panic => panic!("panic on request"),
            Order::Loop => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            Order::Sleep { secs } => {
                std::thread::sleep(std::time::Duration::from_secs(secs));
                ctx.send(from, &json!({"slept": secs}));
            }
            Order::Alloc { mb } => {
                let block = vec![1u8; mb as usize * 1024 * 1024];
                self.hoard.push(block);
                ctx.send(from, &json!({"allocated_mb": mb}));
            }
            Order::Kick => ctx.kick(from, "kicked on request"),
            Order::Tick { ms, spin } => {
                self.spin = spin;
                ctx.set_tick_interval(ms);
                ctx.send(from, &json!({"ticking": ms}));
            }
            Order::Add { n } => {
                self.count += n;
                ctx.send(from, &json!({"count": self.count}));
            }
            Order::Get => ctx.send(from, &json!({"count": self.count})),
            Order::Step { dir } => {
                self.position += if dir == "up" { 1 } else { -1 };
                self.steps.push(dir);
                if self.steps.len() > 3 {
                    self.steps.remove(0);
                }
                ctx.send(from, &json!({"position": self.position, "combo": self.combo()}));
            }
            Order::Poison => {
                self.poisoned = true;
                ctx.send(from, &json!({"poisoned": true}));
            }
            Order::KvSet { key, value } => {
                let r = ctx.kv().set(&key, &value).map(|()| json!("ok"));
                ctx.send(from, &kv_reply(r));
            }
            Order::KvBig { key, bytes } => {
                let r = ctx.kv().set(&key, &"x".repeat(bytes)).map(|()| json!("ok"));
                ctx.send(from, &kv_reply(r));
            }
            Order::KvGet { key } => {
                let r = ctx.kv().get::<Value>(&key).map(|v| v.unwrap_or(Value::Null));
                ctx.send(from, &kv_reply(r));
            }
            Order::KvDel { key } => {
                let r = ctx.kv().delete(&key).map(|()| json!("ok"));
                ctx.send(from, &kv_reply(r));
            }
            Order::KvList { prefix, after, limit } => {
                let r = ctx.kv().list(&prefix, after.as_deref(), limit).map(|keys| json!(keys));
                ctx.send(from, &kv_reply(r));
            }
            Order::Time => {
                let wasi_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let host_ms = ctx.now_ms();
                let random = ctx.random_u64();
                ctx.send(from, &json!({"host_ms": host_ms, "wasi_ms": wasi_ms, "random": random}));
            }
            Order::Log { text } => ctx.log(respawn_guest_sdk::Level::Info, &text),
            Order::HashOrder => {
                let map: std::collections::HashMap<u32, ()> = (0..32).map(|k| (k, ())).collect();
                let order: Vec<u32> = map.into_keys().collect();
                ctx.send(from, &json!({"order": order}));
            }
        }
        Ok(())
    }

    fn on_tick(&mut self, ctx: &mut Ctx) {
        let mut i: u64 = 0;
        for _ in 0..u64::from(self.spin) * 1_000_000 {
            i = std::hint::black_box(i.wrapping_add(1));
        }
        let now = ctx.now_ms();
        ctx.broadcast(&json!({"tick": now}));
    }
}

impl Faulty {
    /// The bonus of the last three steps: only up, up, down has one, and
    /// the table it is looked up in was written one entry short (the bug
    /// the `fix` variant fixes).
    fn combo(&self) -> u64 {
        let table: &[u64] = if cfg!(feature = "fix") {
            &[0, 0, 0, 50]
        } else {
            &[0, 0, 0]
        };
        let key = match self.steps.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["up", "up", "down"] => 3,
            _ => 0,
        };
        table[std::hint::black_box(key)]
    }
}

export_game!(Faulty);

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_guest_sdk::testing::TestRoom;

    #[test]
    fn counts_and_rejects() {
        let mut room = TestRoom::<Faulty>::new();
        room.join(1, "t").unwrap();
        room.message(1, &json!({"do": "count"})).unwrap();
        assert_eq!(room.received(1), vec![json!({"count": 1})]);
        assert_eq!(room.message(1, &json!({"do": "reject"})).unwrap_err().code, "asked-to");
        assert!(TestRoom::<Faulty>::with_config("r", &json!({"fail_init": true})).is_err());
    }

    #[test]
    fn only_up_up_down_reaches_the_combo() {
        let mut room = TestRoom::<Faulty>::new();
        room.join(1, "t").unwrap();
        for dir in ["up", "down", "down", "up", "up", "up"] {
            room.message(1, &json!({"do": "step", "dir": dir})).unwrap();
        }
        assert_eq!(room.received(1).last(), Some(&json!({"position": 2, "combo": 0})));
        let last = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            room.message(1, &json!({"do": "step", "dir": "down"})).map(|_| ())
        }));
        assert_eq!(
            last.is_ok(),
            cfg!(feature = "fix"),
            "the bug strikes only without the fix"
        );
    }
}
