//! Crash capsules: a guest fault as one file that replays anywhere.
//!
//! A capsule holds what a fresh instance needs to fail again the way the
//! room did: the signed module (so the file replays on any machine that
//! trusts its signer), the room's seed, its last checkpoint, every input
//! since up to the failing one, the outputs the room produced for them,
//! and the fault. It is gzip-compressed JSON with a format name and a
//! version, so a foreign or newer file is refused by name.
//!
//! [`folder`] keeps them on the host (one per crash signature, with a
//! count); [`replay`] runs one, offline (`respawn replay`) or in the host
//! (the hot-fix gate).

pub mod folder;
pub mod offline;
pub mod replay;

use crate::room::journal::Entry;
use crate::sandbox::determinism::EntropyPosition;
use crate::sandbox::{Effect, GuestFault};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The `format` every capsule names.
pub const FORMAT: &str = "respawn-capsule";
/// The capsule version this host writes and reads.
pub const VERSION: u32 = 1;
/// The most a capsule may inflate to: a bomb is refused, not unpacked.
const MAX_INFLATED: u64 = 512 << 20;

/// Why a file is not a capsule this host can use.
#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    /// Not gzip, or the gzip stream is cut short or damaged.
    #[error("not a readable capsule (truncated or corrupted, or not a capsule at all): {0}")]
    Unreadable(String),
    /// Gzip, but not JSON in our format.
    #[error("not a Respawn capsule: {0}")]
    Foreign(String),
    /// Written by a host that knows a newer format.
    #[error("capsule version {found} is not known to this host (it reads version {VERSION}); use a newer respawn")]
    UnknownVersion {
        /// The file's version.
        found: u32,
    },
    /// Well-formed, but missing what a replay needs.
    #[error("the capsule cannot be replayed: {0}")]
    Incomplete(String),
}

impl CapsuleError {
    /// Stable code for scripts (`respawn replay --json`).
    pub fn code(&self) -> &'static str {
        match self {
            CapsuleError::Unreadable(_) => "capsule_unreadable",
            CapsuleError::Foreign(_) => "capsule_foreign",
            CapsuleError::UnknownVersion { .. } => "capsule_version",
            CapsuleError::Incomplete(_) => "capsule_incomplete",
        }
    }
}

/// Bytes kept in a capsule as base64 text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Blob)
            .map_err(serde::de::Error::custom)
    }
}

/// The room's state the inputs start from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapsuleCheckpoint {
    /// The room time it was taken at (`init` and `restore` run at it).
    pub now: u64,
    /// The guest's snapshot.
    pub state: Blob,
    /// Where the room's random streams stood.
    pub entropy: EntropyPosition,
}

/// When the fault struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// On the last input.
    Input,
    /// Taking a checkpoint after the inputs.
    Snapshot,
}

/// The fault a capsule records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// `trap`, `timeout`, `out_of_memory`, `effect_flood`.
    pub kind: String,
    /// wasmtime's message (the first line of its error).
    pub message: String,
    /// The guest's wasm backtrace, innermost first, with function names.
    pub backtrace: Vec<String>,
    /// The crash signature (kind and the game's top frames): faults with
    /// one signature are one bug.
    pub signature: String,
    /// When it struck.
    pub stage: Stage,
    /// What the guest said before it failed: a panic's message, a
    /// JavaScript exception's message and stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub said: Option<String>,
}

impl Fault {
    /// The record of `fault`.
    pub fn of(fault: &GuestFault, stage: Stage) -> Self {
        // wasmtime's error reads "error while executing at wasm backtrace:",
        // one line per frame (`N: 0x.. - module!function`), and its cause
        // after the last frame (`...: wasm trap: ...`): the cause is the
        // news, the frames the backtrace.
        let mut backtrace: Vec<String> = Vec::new();
        let mut cause = None;
        for frame in fault.frames() {
            match frame.split_once(": ") {
                Some((function, why)) => {
                    backtrace.push(function.trim().to_owned());
                    cause = Some(why.trim().to_owned());
                }
                None => backtrace.push(frame.to_owned()),
            }
        }
        let message = cause.unwrap_or_else(|| fault.detail.lines().next().unwrap_or_default().trim().to_owned());
        Self {
            kind: fault.kind.code().to_owned(),
            message,
            backtrace,
            signature: fault.signature(),
            stage,
            said: fault.said.clone(),
        }
    }

    /// Whether `other` is the same fault: the same kind and backtrace (the
    /// message may name addresses that differ between machines). A
    /// timeout stops wherever the deadline finds the code: its kind is
    /// enough.
    pub fn same_as(&self, other: &Fault) -> bool {
        self.kind == other.kind
            && self.stage == other.stage
            && (self.kind == "timeout" || self.backtrace == other.backtrace && self.same_guest_stack(other))
    }

    /// For an engine whose wasm frames name nothing (JavaScript: every
    /// exception leaves by the same path), the stacks the guest reported.
    fn same_guest_stack(&self, other: &Fault) -> bool {
        let own = crate::sandbox::game_frames(self.backtrace.iter().map(String::as_str));
        if self.kind != "trap" || !crate::sandbox::unnamed_frames(&own) {
            return true;
        }
        let frames = |f: &Fault| f.said.as_deref().map(crate::sandbox::said_frames);
        frames(self) == frames(other)
    }
}

/// What the guest answered an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Taken.
    Ok,
    /// Refused with a code.
    Rejected {
        /// The game's code.
        code: String,
        /// Its words.
        message: String,
    },
}

/// One effect, as a capsule keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Out {
    /// To one player.
    Send {
        /// Recipient.
        to: u64,
        /// The guest's JSON text.
        payload: String,
    },
    /// To every player, maybe but one.
    Broadcast {
        /// The guest's JSON text.
        payload: String,
        /// Skipped recipient.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<u64>,
    },
    /// A player removed.
    Kick {
        /// Who.
        player: u64,
        /// Why.
        reason: String,
    },
    /// The tick interval asked for.
    Tick {
        /// Milliseconds (0: stop).
        ms: u32,
    },
}

impl From<Effect> for Out {
    fn from(e: Effect) -> Self {
        let text = |p: Vec<u8>| String::from_utf8(p).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into());
        match e {
            Effect::Send { to, payload } => Out::Send {
                to,
                payload: text(payload),
            },
            Effect::Broadcast { payload, except } => Out::Broadcast {
                payload: text(payload),
                except,
            },
            Effect::Kick { player, reason } => Out::Kick { player, reason },
        }
    }
}

/// What one input produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The answer.
    #[serde(flatten)]
    pub answer: Answer,
    /// The effects, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<Out>,
}

/// The sandbox settings a replay must use to fail the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory one instance may grow to, in MiB.
    pub memory_mib: u32,
    /// Compute time per call, in milliseconds.
    pub call_timeout_ms: u64,
    /// The largest value the game may store under one key.
    pub kv_max_value_bytes: u32,
    /// Bytes of keys and values the game may keep.
    pub kv_quota_bytes: u64,
}

impl Limits {
    /// The host's limits now.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            memory_mib: config.sandbox.memory_mib,
            call_timeout_ms: config.sandbox.call_timeout_ms,
            kv_max_value_bytes: config.storage.kv_max_value_bytes,
            kv_quota_bytes: config.storage.kv_quota_mib << 20,
        }
    }

    /// Game-storage limits for a replay.
    pub fn kv(&self) -> crate::storage::kv::KvLimits {
        crate::storage::kv::KvLimits {
            max_value: self.kv_max_value_bytes,
            quota: self.kv_quota_bytes,
        }
    }
}

/// One crash, ready to replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capsule {
    /// Always [`FORMAT`].
    pub format: String,
    /// The capsule version ([`VERSION`]).
    pub version: u32,
    /// The game.
    pub game: String,
    /// The room.
    pub room: String,
    /// The module version that faulted.
    pub module_version: String,
    /// SHA-256 of the signed module, hex.
    pub digest: String,
    /// The signed module itself.
    pub module: Blob,
    /// The room's random seed.
    pub seed: u64,
    /// The JSON the room's `init` got (`[games.<game>.config]`).
    pub init_config: Blob,
    /// The sandbox limits.
    pub limits: Limits,
    /// Where the inputs start.
    pub checkpoint: CapsuleCheckpoint,
    /// Every input since the checkpoint; under [`Stage::Input`] the last
    /// is the failing one.
    pub inputs: Vec<Entry>,
    /// What the room produced for each input before the failing one,
    /// regenerated by a replay when the capsule was written.
    pub outputs: Vec<Output>,
    /// Digests (`replay::digest`) of what the room really sent for each
    /// of those inputs, kept by the room as it ran: a replay that does
    /// not match them is a host bug.
    pub live_digests: Vec<u64>,
    /// The fault.
    pub fault: Fault,
    /// Player payloads were replaced (`capsules.redact`): the capsule
    /// shows what happened but cannot replay it.
    #[serde(default)]
    pub redacted: bool,
    /// When it happened, Unix milliseconds.
    pub at_ms: u64,
}

impl Capsule {
    /// The file's bytes: gzip of the JSON.
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json)?;
        gz.finish()
    }

    /// Reads a capsule file's bytes, refusing anything else by name.
    pub fn decode(bytes: &[u8]) -> Result<Self, CapsuleError> {
        if bytes.len() < 2 || bytes[..2] != [0x1f, 0x8b] {
            return Err(CapsuleError::Unreadable("it is not gzip-compressed".into()));
        }
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut json)
            .map_err(|e| CapsuleError::Unreadable(e.to_string()))?;
        if json.len() as u64 > MAX_INFLATED {
            return Err(CapsuleError::Unreadable(format!(
                "it inflates to more than {} MiB",
                MAX_INFLATED >> 20
            )));
        }
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head = serde_json::from_slice(&json).map_err(|e| CapsuleError::Foreign(e.to_string()))?;
        if head.format.as_deref() != Some(FORMAT) {
            return Err(CapsuleError::Foreign(format!(
                "its format is {:?}, not {FORMAT:?}",
                head.format.unwrap_or_default()
            )));
        }
        match head.version {
            Some(VERSION) => {}
            Some(found) => return Err(CapsuleError::UnknownVersion { found }),
            None => return Err(CapsuleError::Foreign("it has no version".into())),
        }
        let capsule: Capsule = serde_json::from_slice(&json).map_err(|e| CapsuleError::Incomplete(e.to_string()))?;
        if capsule.fault.stage == Stage::Input && capsule.inputs.is_empty() {
            return Err(CapsuleError::Incomplete("it has no failing input".into()));
        }
        Ok(capsule)
    }

    /// Replaces every player payload (messages, names, identities) with a
    /// placeholder of the same length class; the fault and the shape of
    /// the inputs stay.
    pub fn redact(&mut self) {
        use crate::room::journal::Input;
        for entry in &mut self.inputs {
            match &mut entry.input {
                Input::Message { payload, reference, .. } => {
                    *payload = bytes::Bytes::from(format!("\"<redacted {} bytes>\"", payload.len()));
                    *reference = None;
                }
                Input::Join { name, user, .. } => {
                    *name = "<redacted>".into();
                    if let Some(u) = user {
                        u.id = "<redacted>".into();
                        u.claims.clear();
                    }
                }
                Input::Leave { .. } | Input::Tick => {}
            }
            entry.reads.clear();
        }
        for out in &mut self.outputs {
            if let Answer::Rejected { message, .. } = &mut out.answer {
                *message = "<redacted>".into();
            }
            for e in &mut out.effects {
                match e {
                    Out::Send { payload, .. } | Out::Broadcast { payload, .. } => *payload = "<redacted>".into(),
                    Out::Kick { reason, .. } => *reason = "<redacted>".into(),
                    Out::Tick { .. } => {}
                }
            }
        }
        // A panic's message or an exception's may quote what a player sent
        // (the signature holds function names only).
        self.fault.message = "<redacted>".into();
        // A JavaScript stack's frames stay (replays tell faults apart by
        // them); no other line does.
        if let Some(said) = &mut self.fault.said {
            *said = crate::sandbox::redacted_said(said);
        }
        self.init_config = Blob::default();
        self.checkpoint.state = Blob::default();
        self.redacted = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::journal::Input;

    fn sample() -> Capsule {
        Capsule {
            format: FORMAT.into(),
            version: VERSION,
            game: "g".into(),
            room: "r".into(),
            module_version: "1.0.0".into(),
            digest: "d".into(),
            module: Blob(vec![0, 97, 115, 109]),
            seed: 7,
            init_config: Blob(b"{}".to_vec()),
            limits: Limits {
                memory_mib: 64,
                call_timeout_ms: 100,
                kv_max_value_bytes: 1024,
                kv_quota_bytes: 1 << 20,
            },
            checkpoint: CapsuleCheckpoint {
                now: 5,
                state: Blob(b"{\"count\":1}".to_vec()),
                entropy: EntropyPosition::default(),
            },
            inputs: vec![Entry {
                now: 6,
                input: Input::Message {
                    player: 1,
                    payload: bytes::Bytes::from_static(b"{\"do\":\"panic\"}"),
                    reference: None,
                },
                reads: Vec::new(),
            }],
            outputs: Vec::new(),
            live_digests: Vec::new(),
            fault: Fault {
                kind: "trap".into(),
                message: "boom".into(),
                backtrace: vec!["f".into()],
                signature: "trap:f".into(),
                stage: Stage::Input,
                said: None,
            },
            redacted: false,
            at_ms: 1,
        }
    }

    #[test]
    fn a_capsule_reads_back_as_written() {
        let c = sample();
        let back = Capsule::decode(&c.encode().unwrap()).unwrap();
        assert_eq!(back.module, c.module);
        assert_eq!(back.checkpoint.state, c.checkpoint.state);
        assert_eq!(back.fault, c.fault);
        assert_eq!(
            serde_json::to_string(&back.inputs).unwrap(),
            serde_json::to_string(&c.inputs).unwrap()
        );
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let good = sample().encode().unwrap();
        let code = |b: &[u8]| Capsule::decode(b).unwrap_err().code();
        assert_eq!(code(b"{\"format\":\"respawn-capsule\"}"), "capsule_unreadable");
        assert_eq!(code(&good[..good.len() / 2]), "capsule_unreadable");
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert_eq!(code(&flipped), "capsule_unreadable");
        let gz = |text: &str| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(code(&gz("[1,2]")), "capsule_foreign");
        assert_eq!(code(&gz("{\"format\":\"other\",\"version\":1}")), "capsule_foreign");
        assert_eq!(
            code(&gz("{\"format\":\"respawn-capsule\",\"version\":9}")),
            "capsule_version"
        );
        assert_eq!(
            code(&gz("{\"format\":\"respawn-capsule\",\"version\":1}")),
            "capsule_incomplete"
        );
    }

    #[test]
    fn redaction_removes_player_payloads() {
        let mut c = sample();
        c.fault.backtrace = vec![
            "<unknown>!<wasm function 7>".into(),
            "<unknown>!<wasm function 9>".into(),
        ];
        c.fault.said = Some(
            "uncaught exception in onMessage: Error: bad name ann\nsecond line from ann@home.example\nplay@game.js:1:2\n@game.js:3:4"
                .into(),
        );
        let before = c.fault.clone();
        c.redact();
        let text = String::from_utf8(serde_json::to_vec(&c).unwrap()).unwrap();
        assert!(!text.contains("panic"), "{text}");
        assert!(!text.contains("count"), "{text}");
        assert!(!text.contains("ann"), "what the guest said: {text}");
        assert!(c.redacted);
        assert!(c.fault.same_as(&before), "the stack that tells faults apart stays");
        let mut other = before.clone();
        other.said = Some("uncaught exception in onTick: Error: x\ntick@game.js:9:9".into());
        assert!(!c.fault.same_as(&other), "and still tells them apart");

        // A Rust panic's message follows its location line: none of it stays.
        let mut rust = sample();
        rust.fault.said = Some("guest panicked: panicked at src/lib.rs:10:5:\nname ann is taken".into());
        rust.redact();
        assert_eq!(rust.fault.said.as_deref(), Some("<redacted>"));
    }

    #[test]
    fn javascript_faults_are_told_apart_by_the_stack_the_guest_reported() {
        let fault = |said: &str| Fault {
            kind: "trap".into(),
            message: "wasm trap: wasm `unreachable` instruction executed".into(),
            backtrace: vec![
                "<unknown>!<wasm function 12608>".into(),
                "<unknown>!<wasm function 4450>".into(),
            ],
            signature: String::new(),
            stage: Stage::Input,
            said: Some(said.into()),
        };
        let a = fault("uncaught exception in onMessage: TypeError: x\nplay@g.js:1:1\nonMessage@g.js:2:2");
        let same = fault("uncaught exception in onMessage: TypeError: y\nplay@g.js:1:1\nonMessage@g.js:2:2");
        let other = fault("uncaught exception in onTick: RangeError: z\ntick@g.js:5:5");
        assert!(a.same_as(&same));
        assert!(!a.same_as(&other));
    }
}
