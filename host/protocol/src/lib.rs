//! The player protocol: JSON envelopes, the same over WebSocket frames and
//! TCP lines. See the README's "Protocol" section for the reference.
//!
//! Parsing is zero-copy for the game payload: a message's `data` reaches the
//! guest as the exact JSON text the player sent.

#![warn(missing_docs)]

pub mod line;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use tungstenite::Utf8Bytes;

/// Bumped on incompatible protocol changes; sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The room joined when a `join` names none.
pub const DEFAULT_ROOM: &str = "lobby";

/// Longest player name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// Stable machine-readable error codes. Clients match on these; never
/// rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame's bytes are not UTF-8.
    InvalidUtf8,
    /// The frame is not JSON.
    InvalidJson,
    /// Valid JSON, but not a request this protocol knows.
    BadRequest,
    /// The frame exceeds `net.max_message_bytes`.
    MessageTooLarge,
    /// `message` or `leave` before `join`.
    NotJoined,
    /// `join` while already in a room.
    AlreadyJoined,
    /// No game of that name is loaded.
    UnknownGame,
    /// The player name is empty, too long or has control characters.
    InvalidName,
    /// The room name is empty, too long or has characters outside
    /// `A-Z a-z 0-9 - _ .`.
    InvalidRoom,
    /// The room has `rooms.max_players` players.
    RoomFull,
    /// The game refused the join (`reason` has the game's code).
    JoinRefused,
    /// The game refused the message (`reason` has the game's code).
    Rejected,
    /// The game's code failed (trap, timeout, memory limit) and could not
    /// be kept running: the room closed and the player is out of it.
    GuestFault,
    /// The game's code failed on this request; the room restarted from its
    /// last good state without it. The player is still in the room.
    GuestRestarted,
    /// The room closed or could not start.
    RoomClosed,
    /// The host cannot take more connections or rooms right now.
    ServerFull,
    /// Your address has `net.max_connections_per_address` connections
    /// open; this one is refused.
    TooManyConnections,
    /// This connection or address created rooms faster than
    /// `rooms.create_per_minute` (or `rooms.create_per_minute_per_address`)
    /// allows: join an existing room, or try again later.
    TooManyRooms,
    /// The player fell too far behind reading; the connection closes.
    SlowConsumer,
    /// Over `net.rate_per_sec` (with `net.rate_burst`): the frame was
    /// dropped; the connection lives on.
    RateLimited,
    /// Nothing arrived for `net.idle_timeout_ms`; the connection closes.
    IdleTimeout,
    /// `resume` with a token that is unknown or whose grace period ended;
    /// join again.
    ResumeFailed,
    /// Another connection resumed this player's seat; this one closes.
    Superseded,
    /// The host's storage is failing: the request was not applied (a join
    /// refused, a message dropped unanswered by the game). Nothing the
    /// host acknowledged before is lost; try again later.
    StorageUnavailable,
    /// The host requires a signed join ticket (`auth.required`) and the
    /// `join` had none.
    TicketRequired,
    /// The ticket is not a well-formed JWT (parts, base64url, JSON, claim
    /// types, size).
    TicketInvalid,
    /// The ticket's `exp` has passed: fetch a fresh one.
    TicketExpired,
    /// The ticket's `nbf` is still ahead.
    TicketNotYetValid,
    /// The ticket's `iss` is missing or not the host's issuer.
    TicketWrongIssuer,
    /// The ticket's `aud` is missing or not the host's audience.
    TicketWrongAudience,
    /// The ticket's signature does not verify: tampered, or another key.
    TicketBadSignature,
    /// The ticket's `kid` names a key the host does not have.
    TicketUnknownKey,
    /// The ticket's `alg` is `none`, unknown, or not its key's algorithm.
    TicketAlgorithm,
    /// The ticket limits its games or rooms (`games`, `rooms` claims) and
    /// this join is for another.
    TicketNotAllowed,
    /// The ticket's user is banned (`message` says why and until when).
    /// A player banned while in a room gets `kicked` instead; the
    /// connection stays open either way.
    Banned,
    /// This user or address joined more often than the host allows
    /// (`auth.user_joins_per_minute`, `net.address_joins_per_minute`).
    TooManyJoins,
    /// A bug in the host; it has been logged.
    Internal,
    /// The room lives on another node of the fleet: `node` says where;
    /// connect there and send the same `join` (or `resume`).
    RoomElsewhere,
    /// The room moved to another node of the fleet (this node lost its
    /// lease on it): the connection closes; `resume` with your token on
    /// any node, which sends you on with `room_elsewhere` if need be.
    RoomMoved,
    /// A code this build does not know (a newer host's); never sent.
    #[serde(other)]
    Unknown,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A request the host could not accept, as sent to the player.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    /// What class of problem.
    pub code: ErrorCode,
    /// What exactly, for people.
    pub message: String,
}

impl ProtocolError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A player's request, borrowed from the frame it came in.
#[derive(Debug)]
pub enum Request<'a> {
    /// Enter a room of a game, creating it if needed.
    Join {
        /// The game's name.
        game: String,
        /// The room's name within the game.
        room: String,
        /// The player's display name; may be left out with a ticket that
        /// names the player.
        name: Option<String>,
        /// A signed join ticket (a JWT) from the studio's account service.
        ticket: Option<String>,
        /// Echoed in the reply.
        reference: Option<&'a RawValue>,
    },
    /// A game message, handed to the guest as JSON text.
    Message {
        /// The game payload.
        data: &'a RawValue,
        /// When present, a successful message is acknowledged with `ack`.
        reference: Option<&'a RawValue>,
    },
    /// Leave the current room.
    Leave {
        /// Echoed in the reply.
        reference: Option<&'a RawValue>,
    },
    /// Liveness check, answered with `pong`.
    Ping {
        /// Echoed in the reply.
        reference: Option<&'a RawValue>,
    },
    /// Answer to the host's `ping` (TCP heartbeats); nothing is sent back.
    Pong,
    /// Take back the seat of a dropped connection.
    Resume {
        /// The `resume` token of the earlier connection.
        token: String,
        /// The `seq` of the last room frame the client got; the host
        /// resends the ones after it that it still has.
        last_seq: Option<u64>,
        /// Echoed in the reply.
        reference: Option<&'a RawValue>,
    },
}

impl Request<'_> {
    /// The client's correlation value, echoed in replies and errors.
    pub fn reference(&self) -> Option<&RawValue> {
        match self {
            Request::Join { reference, .. }
            | Request::Message { reference, .. }
            | Request::Leave { reference }
            | Request::Ping { reference }
            | Request::Resume { reference, .. } => *reference,
            Request::Pong => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    game: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
    reference: Option<&'a RawValue>,
}

/// Keeps an explicit JSON `null` as a value instead of folding it into `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Whether a frame's text is a JSON object, by its first character (the
/// parser says whether the rest is valid).
fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// The `ref` of a frame that is not a valid request but is a JSON object
/// with one (an unknown `type`, a missing field, a bad name), so the error
/// the player gets still answers the request it was waiting on.
pub fn reference_of(frame: &[u8]) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct RefOnly<'a> {
        #[serde(rename = "ref", default, borrow, deserialize_with = "present")]
        reference: Option<&'a RawValue>,
    }
    let text = std::str::from_utf8(frame).ok().filter(|t| is_object(t))?;
    serde_json::from_str::<RefOnly<'_>>(text)
        .ok()?
        .reference
        .map(RawValue::to_owned)
}

/// Parses one frame's bytes into a request, with the error a player should
/// see when that fails.
pub fn parse_request(frame: &[u8]) -> Result<Request<'_>, ProtocolError> {
    let text = std::str::from_utf8(frame).map_err(|e| {
        ProtocolError::new(
            ErrorCode::InvalidUtf8,
            format!("frame is not UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })?;
    // serde reads a struct from a JSON array too: `["ping"]` would be a
    // ping. A request is an object; anything else is refused as what it is.
    if !is_object(text) {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => ProtocolError::new(
                ErrorCode::BadRequest,
                "a request is a JSON object, such as {\"type\":\"ping\"}",
            ),
            Err(e) => ProtocolError::new(ErrorCode::InvalidJson, format!("frame is not JSON: {e}")),
        });
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ProtocolError::new(ErrorCode::BadRequest, format!("not a request: {e}"))
        } else {
            ProtocolError::new(ErrorCode::InvalidJson, format!("frame is not JSON: {e}"))
        }
    })?;
    let reference = wire.reference;
    let need = |field: Option<String>, name: &str| {
        field.ok_or_else(|| ProtocolError::new(ErrorCode::BadRequest, format!("`{}` needs `{name}`", wire.kind)))
    };
    match &*wire.kind {
        "join" => {
            let game = need(wire.game.clone(), "game")?;
            let name = match &wire.ticket {
                Some(_) => wire.name.clone(),
                None => Some(need(wire.name.clone(), "name")?),
            };
            let room = wire.room.clone().unwrap_or_else(|| DEFAULT_ROOM.to_owned());
            if let Some(name) = &name {
                check_name(name)?;
            }
            check_room(&room)?;
            Ok(Request::Join {
                game,
                room,
                name,
                ticket: wire.ticket.clone(),
                reference,
            })
        }
        "message" => {
            let data = wire
                .data
                .ok_or_else(|| ProtocolError::new(ErrorCode::BadRequest, "`message` needs `data`"))?;
            Ok(Request::Message { data, reference })
        }
        "leave" => Ok(Request::Leave { reference }),
        "ping" => Ok(Request::Ping { reference }),
        "pong" => Ok(Request::Pong),
        "resume" => Ok(Request::Resume {
            token: need(wire.token.clone(), "token")?,
            last_seq: wire.last_seq,
            reference,
        }),
        other => Err(ProtocolError::new(
            ErrorCode::BadRequest,
            format!("unknown request type `{other}` (expected join, message, leave, ping, pong or resume)"),
        )),
    }
}

/// Characters that change how the text around them is shown without
/// showing themselves, or show as nothing: bidirectional overrides,
/// embeddings and isolates (which let one player's name display as
/// another's), invisible fillers and formatting characters (Unicode's
/// default-ignorable code points), and line or paragraph separators. The
/// zero-width joiner and non-joiner are not among them: emoji sequences
/// and many Persian and Indic names need them.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                 // soft hyphen
        | '\u{034F}'               // combining grapheme joiner
        | '\u{061C}'               // Arabic letter mark
        | '\u{115F}' | '\u{1160}' // Hangul fillers
        | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}' // Mongolian variation selectors and vowel separator
        | '\u{200B}'               // zero-width space
        | '\u{200E}' | '\u{200F}' // left-to-right and right-to-left marks
        | '\u{2028}' | '\u{2029}' // line and paragraph separators
        | '\u{202A}'..='\u{202E}' // embeddings and overrides
        | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, isolates, deprecated formatting
        | '\u{3164}'               // Hangul filler
        | '\u{FE00}'..='\u{FE0F}' // variation selectors
        | '\u{FEFF}'               // zero-width no-break space
        | '\u{FFA0}'               // halfwidth Hangul filler
        | '\u{FFF0}'..='\u{FFFB}' // interlinear annotation and unassigned specials
        | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
        | '\u{1D173}'..='\u{1D17A}' // musical formatting
        | '\u{E0000}'..='\u{E0FFF}' // tags and variation selectors supplement
    )
}

/// Checks a display name: 1 to [`MAX_NAME_CHARS`] characters, something
/// visible, no control, bidirectional or invisible characters, no spaces
/// at either end. Names from tickets are held to the same rule.
pub fn check_name(name: &str) -> Result<(), ProtocolError> {
    let chars = name.chars().count();
    let joiner = |c: char| matches!(c, '\u{200C}' | '\u{200D}');
    if chars == 0
        || chars > MAX_NAME_CHARS
        || name.chars().any(|c| c.is_control() || is_invisible(c))
        || name.chars().all(|c| joiner(c) || c.is_whitespace())
        || name.trim() != name
    {
        return Err(ProtocolError::new(
            ErrorCode::InvalidName,
            format!(
                "a name has 1 to {MAX_NAME_CHARS} characters, something visible, no control, bidirectional or \
                 invisible characters, and no spaces at either end"
            ),
        ));
    }
    Ok(())
}

fn check_room(room: &str) -> Result<(), ProtocolError> {
    let ok = !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(ProtocolError::new(
            ErrorCode::InvalidRoom,
            format!("a room name has 1 to {MAX_ROOM_LEN} characters from A-Z a-z 0-9 - _ ."),
        ));
    }
    Ok(())
}

/// A message from the host to a player.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// First frame on every connection.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// `respawn/<version>`.
        server: &'a str,
        /// This connection's player id.
        player: u64,
        /// Token to `resume` this player's seat from a new connection if
        /// this one drops.
        resume: &'a str,
        /// The host closes a connection silent for this long; send `ping`.
        idle_timeout_ms: u64,
        /// How long a dropped player's seat is kept for `resume`.
        resume_grace_ms: u64,
    },
    /// A dropped player is back in its seat; frames queued meanwhile
    /// follow.
    Resumed {
        /// The player's id (the earlier connection's).
        player: u64,
        /// The game.
        game: &'a str,
        /// The room.
        room: &'a str,
        /// The version of the game the room runs.
        version: &'a str,
        /// The token to use from now on.
        resume: &'a str,
        /// Room frames resent after this one because the client's
        /// `last_seq` had not seen them.
        replayed: usize,
        /// Room frames after `last_seq` the host no longer had (it keeps
        /// the last `net.outbound_queue`).
        lost: u64,
        /// Room frames the client saw that no longer happened: the host
        /// crashed and came back without the inputs behind them (under a
        /// durability level below `strict`). Numbering goes on from
        /// `last_seq - rewound`; the client's view is ahead of the room's.
        #[serde(skip_serializing_if = "is_zero")]
        rewound: u64,
        /// The verified user id of the seat, if it was joined with a
        /// ticket.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// The request's `ref`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
    },
    /// The room's game failed and was restarted from its last good state;
    /// the input that failed was dropped.
    Restarted {
        /// The version the room runs.
        version: &'a str,
        /// What failed (`trap`, `timeout`, `out_of_memory`, `effect_flood`).
        reason: &'a str,
    },
    /// The host is shutting down; the connection closes next. Reconnect
    /// later.
    Shutdown {
        /// For people.
        message: &'a str,
    },
    /// Heartbeat from the host on TCP; answer with `pong`.
    Ping,
    /// The player is in the room.
    Joined {
        /// The game.
        game: &'a str,
        /// The room.
        room: &'a str,
        /// The player's id in the room.
        player: u64,
        /// The version of the game the room runs.
        version: &'a str,
        /// The verified user id, when the player joined with a ticket.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// The display name the room knows the player by (a ticket's
        /// `name` wins over the request's).
        name: &'a str,
        /// The request's `ref`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
    },
    /// The player left the room.
    Left {
        /// The request's `ref`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
    },
    /// The room now runs another version of its game (hot swap or
    /// rollback); its state was carried over.
    Swapped {
        /// The version before.
        from: &'a str,
        /// The version now.
        version: &'a str,
    },
    /// The game (or an operator) removed the player from the room.
    Kicked {
        /// The game's reason.
        reason: &'a str,
    },
    /// An operator closed the room; the player is no longer in it (the
    /// connection stays open).
    Closed {
        /// The operator's reason.
        reason: &'a str,
    },
    /// A message from the host's operators to everyone in the room.
    System {
        /// For people.
        message: &'a str,
    },
    /// The message with this `ref` was accepted by the game.
    Ack {
        /// The message's `ref`, echoed.
        #[serde(rename = "ref")]
        reference: &'a RawValue,
    },
    /// Answer to `ping`.
    Pong {
        /// The request's `ref`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
    },
    /// Something went wrong; the connection stays usable unless the code
    /// says otherwise (`slow_consumer`).
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// For people.
        message: &'a str,
        /// The game's own code, for `join_refused` and `rejected`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        /// The request's `ref`, echoed.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
        /// Where the room is, for `room_elsewhere`.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<&'a NodeAddress>,
    },
}

/// Where a node of the fleet takes players.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// The node's name.
    pub id: String,
    /// Its WebSocket URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    /// Its TCP address (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
}

/// A `room_elsewhere` error: the room lives on `node`.
pub fn elsewhere_frame(message: &str, node: &NodeAddress, reference: Option<&RawValue>) -> Utf8Bytes {
    ServerMsg::Error {
        code: ErrorCode::RoomElsewhere,
        message,
        reason: None,
        reference,
        node: Some(node),
    }
    .encode()
}

impl ServerMsg<'_> {
    /// The frame's JSON text.
    pub fn encode(&self) -> Utf8Bytes {
        // Serializing these plain structs cannot fail; the fallback keeps
        // a future mistake from panicking a connection.
        match serde_json::to_string(self) {
            Ok(text) => Utf8Bytes::from(text),
            Err(_) => Utf8Bytes::from_static(r#"{"type":"error","code":"internal","message":"encoding failed"}"#),
        }
    }
}

/// An `error` frame.
pub fn error_frame(err: &ProtocolError, reason: Option<&str>, reference: Option<&RawValue>) -> Utf8Bytes {
    ServerMsg::Error {
        code: err.code,
        message: &err.message,
        reason,
        reference,
        node: None,
    }
    .encode()
}

/// An `event` frame carrying a guest payload. A payload that is not JSON is
/// carried as a JSON string so the envelope stays valid.
pub fn event_frame(payload: &[u8]) -> Utf8Bytes {
    let mut out = String::with_capacity(payload.len() + 24);
    out.push_str(r#"{"type":"event","data":"#);
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => out.push_str(text),
        _ => {
            let lossy = String::from_utf8_lossy(payload);
            out.push_str(&serde_json::Value::String(lossy.into_owned()).to_string());
        }
    }
    out.push('}');
    Utf8Bytes::from(out)
}

/// A frame from the host as a client reads it: [`ServerMsg`] owned, plus
/// the `seq` room frames carry and the `event` frame. Fields a newer host
/// adds are ignored; a `type` this build does not know is [`Unknown`].
///
/// [`Unknown`]: ServerFrame::Unknown
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of a connection.
    Welcome {
        /// [`PROTOCOL_VERSION`] of the host.
        protocol: u32,
        /// The host's name and version.
        server: String,
        /// This connection's player id.
        player: u64,
        /// The resume token of this connection's seat.
        resume: String,
        /// The host closes a connection silent this long.
        idle_timeout_ms: u64,
        /// A dropped seat is kept this long.
        resume_grace_ms: u64,
    },
    /// A `join` succeeded.
    Joined {
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// The player id.
        player: u64,
        /// The version the room runs.
        version: String,
        /// The verified user id, with a ticket.
        #[serde(default)]
        user: Option<String>,
        /// The display name the room uses.
        #[serde(default)]
        name: Option<String>,
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
    },
    /// A `resume` succeeded.
    Resumed {
        /// The player id (the seat's).
        player: u64,
        /// The game.
        game: String,
        /// The room.
        room: String,
        /// The version the room runs.
        version: String,
        /// The new resume token.
        resume: String,
        /// Frames sent again.
        replayed: u64,
        /// Frames no longer kept.
        lost: u64,
        /// Frames seen that a crash of the host undid.
        #[serde(default)]
        rewound: u64,
        /// The seat's verified user id, if it was joined with a ticket.
        #[serde(default)]
        user: Option<String>,
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
    },
    /// What the game sent.
    Event {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The game's payload.
        data: serde_json::Value,
    },
    /// The game took a message that had a `ref`.
    Ack {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The request's `ref`.
        #[serde(rename = "ref")]
        reference: serde_json::Value,
    },
    /// A request or the room failed.
    Error {
        /// The room frame's number (room errors only).
        #[serde(default)]
        seq: Option<u64>,
        /// What class of problem.
        code: ErrorCode,
        /// For people.
        message: String,
        /// The game's own code.
        #[serde(default)]
        reason: Option<String>,
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
        /// Where the room is (`room_elsewhere`).
        #[serde(default)]
        node: Option<NodeAddress>,
    },
    /// The answer to `ping`.
    Pong {
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
    },
    /// The host's heartbeat over TCP: answer `pong`.
    Ping,
    /// The player left the room.
    Left {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The request's `ref`.
        #[serde(rename = "ref", default)]
        reference: Option<serde_json::Value>,
    },
    /// The game removed the player.
    Kicked {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The game's reason.
        reason: String,
    },
    /// An operator closed the room; the player is out of it.
    Closed {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The operator's reason.
        reason: String,
    },
    /// The host's operators speak to everyone in the room.
    /// Not a numbered room frame: like a notice, it carries no `seq`.
    System {
        /// For people.
        message: String,
    },
    /// The room moved to another version.
    Swapped {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The version before.
        from: String,
        /// The version now.
        version: String,
    },
    /// The room restarted from its checkpoint after a fault.
    Restarted {
        /// The room frame's number.
        #[serde(default)]
        seq: Option<u64>,
        /// The version it runs.
        version: String,
        /// The fault's kind.
        reason: String,
    },
    /// The host is shutting down.
    Shutdown {
        /// For people.
        message: String,
    },
    /// A frame type this build does not know.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// The room frame's `seq`, if it is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerFrame::Event { seq, .. }
            | ServerFrame::Ack { seq, .. }
            | ServerFrame::Error { seq, .. }
            | ServerFrame::Left { seq, .. }
            | ServerFrame::Kicked { seq, .. }
            | ServerFrame::Closed { seq, .. }
            | ServerFrame::Swapped { seq, .. }
            | ServerFrame::Restarted { seq, .. } => *seq,
            _ => None,
        }
    }

    /// Whether the player is out of the room after this frame (kicked,
    /// left, the room closed or failed for good, or the host is going
    /// away).
    pub fn ends_seat(&self) -> bool {
        matches!(
            self,
            ServerFrame::Kicked { .. }
                | ServerFrame::Closed { .. }
                | ServerFrame::Left { .. }
                | ServerFrame::Shutdown { .. }
                | ServerFrame::Error {
                    code: ErrorCode::GuestFault | ErrorCode::Superseded | ErrorCode::Banned,
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn names_cannot_hide_or_reorder_characters() {
        let join = |name: &str| {
            parse_request(
                json!({"type": "join", "game": "g", "name": name})
                    .to_string()
                    .as_bytes(),
            )
            .map(|_| ())
        };
        assert!(join("ann").is_ok());
        assert!(join("Zoë 😀").is_ok());
        assert!(join("عمر").is_ok(), "right-to-left scripts are fine");
        assert!(
            join("👩\u{200D}💻").is_ok(),
            "emoji sequences use the zero-width joiner"
        );
        assert!(
            join("می\u{200C}خواهم").is_ok(),
            "Persian uses the zero-width non-joiner"
        );
        for bad in [
            "ann\u{202E}nimda", // right-to-left override
            "\u{2067}ann",      // isolate
            "a\u{200B}nn",      // zero-width space
            "\u{200B}\u{200D}", // nothing visible at all
            "\u{200D}\u{200C}", // joiners alone
            "\u{FEFF}",
            "ann\u{3164}",  // Hangul filler: looks like \"ann\"
            "ann\u{2028}x", // a line break inside a name
            "a\u{FE0F}",
            "a\u{E0041}",
            " ann",
            "ann ",
        ] {
            assert_eq!(
                join(bad).unwrap_err().code,
                ErrorCode::InvalidName,
                "{bad:?} is refused"
            );
        }
    }

    #[test]
    fn only_objects_are_requests_and_deep_garbage_is_not_json() {
        assert_eq!(code(br#"["ping"]"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"["join","echo","arr","bob"]"#), ErrorCode::BadRequest);
        assert_eq!(code(b" \"ping\""), ErrorCode::BadRequest);
        assert_eq!(code(b"42"), ErrorCode::BadRequest);
        assert_eq!(code("[".repeat(60_000).as_bytes()), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,"), ErrorCode::InvalidJson);
        assert!(
            parse_request(b" \n{\"type\":\"ping\"}").is_ok(),
            "leading whitespace is fine"
        );
    }

    #[test]
    fn a_refused_request_still_has_its_ref() {
        let r = |f: &[u8]| reference_of(f).map(|r| r.get().to_owned());
        assert_eq!(r(br#"{"type":"fly","ref":5}"#).as_deref(), Some("5"));
        assert_eq!(
            r(br#"{"type":"join","game":"echo","ref":"j"}"#).as_deref(),
            Some(r#""j""#)
        );
        assert_eq!(
            r(br#"{"type":"join","game":"echo","name":"","ref":{"a":[1]}}"#).as_deref(),
            Some(r#"{"a":[1]}"#)
        );
        assert_eq!(r(br#"{"type":"fly","ref":null}"#).as_deref(), Some("null"));
        assert_eq!(r(br#"{"type":"fly"}"#), None);
        assert_eq!(r(br#"[{"ref":1}]"#), None);
        assert_eq!(r(b"{\"ref\": "), None);
    }

    fn code(frame: &[u8]) -> ErrorCode {
        parse_request(frame).unwrap_err().code
    }

    #[test]
    fn parses_every_request_and_keeps_data_verbatim() {
        match parse_request(br#"{"type":"join","game":"chat","name":"ann","ref":7}"#).unwrap() {
            Request::Join {
                game,
                room,
                name,
                ticket,
                reference,
            } => {
                assert_eq!(
                    (game.as_str(), room.as_str(), name.as_deref()),
                    ("chat", "lobby", Some("ann"))
                );
                assert_eq!(reference.unwrap().get(), "7");
                assert!(ticket.is_none());
            }
            other => panic!("{other:?}"),
        }
        // With a ticket the name may come from the ticket; without one it
        // is needed.
        match parse_request(br#"{"type":"join","game":"chat","ticket":"a.b.c"}"#).unwrap() {
            Request::Join { name, ticket, .. } => {
                assert_eq!((name, ticket.as_deref()), (None, Some("a.b.c")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(code(br#"{"type":"join","game":"chat"}"#), ErrorCode::BadRequest);
        match parse_request(br#"{"type":"message","data":{"a": [1, 2]}}"#).unwrap() {
            Request::Message { data, reference } => {
                assert_eq!(data.get(), r#"{"a": [1, 2]}"#);
                assert!(reference.is_none());
            }
            other => panic!("{other:?}"),
        }
        match parse_request(br#"{"type":"message","data":null}"#).unwrap() {
            Request::Message { data, .. } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_request(br#"{"type":"leave"}"#),
            Ok(Request::Leave { .. })
        ));
        assert!(matches!(
            parse_request(br#"{"type":"ping","ref":"x"}"#),
            Ok(Request::Ping { reference: Some(_) })
        ));
    }

    #[test]
    fn bad_frames_get_distinct_codes() {
        assert_eq!(code(b"\xff\xfe"), ErrorCode::InvalidUtf8);
        assert_eq!(code(b"{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b""), ErrorCode::InvalidJson);
        assert_eq!(code(b"[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"type":"dance"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"type":"join","game":"chat"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"type":"message"}"#), ErrorCode::BadRequest);
        assert_eq!(code(br#"{"type":"ping","extra":1}"#), ErrorCode::BadRequest);
        assert_eq!(
            code(br#"{"type":"join","game":"chat","name":""}"#),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(br#"{"type":"join","game":"chat","name":"a\u0007"}"#),
            ErrorCode::InvalidName
        );
        assert_eq!(
            code(br#"{"type":"join","game":"chat","name":" a"}"#),
            ErrorCode::InvalidName
        );
        let long = format!(r#"{{"type":"join","game":"chat","name":"{}"}}"#, "é".repeat(33));
        assert_eq!(code(long.as_bytes()), ErrorCode::InvalidName);
        assert_eq!(
            code(br#"{"type":"join","game":"chat","name":"a","room":"a b"}"#),
            ErrorCode::InvalidRoom
        );
    }

    #[test]
    fn server_frames_are_valid_json() {
        let reference = RawValue::from_string("\"r1\"".into()).unwrap();
        let err = ProtocolError::new(ErrorCode::Rejected, "cell \"4\" is taken");
        let frame: Value = serde_json::from_str(&error_frame(&err, Some("cell-taken"), Some(&reference))).unwrap();
        assert_eq!(
            frame,
            json!({"type":"error","code":"rejected","message":"cell \"4\" is taken","reason":"cell-taken","ref":"r1"})
        );
        let ev: Value = serde_json::from_str(&event_frame(br#"{"x":1}"#)).unwrap();
        assert_eq!(ev, json!({"type":"event","data":{"x":1}}));
        let ev: Value = serde_json::from_str(&event_frame(b"not json \xff")).unwrap();
        assert_eq!(ev, json!({"type":"event","data":"not json \u{fffd}"}));
        let joined: Value = serde_json::from_str(
            &ServerMsg::Joined {
                game: "g",
                room: "r",
                player: 3,
                version: "1.0.0",
                user: None,
                name: "ann",
                reference: None,
            }
            .encode(),
        )
        .unwrap();
        assert_eq!(
            joined,
            json!({"type":"joined","game":"g","room":"r","player":3,"version":"1.0.0","name":"ann"})
        );
    }

    #[test]
    fn clients_read_every_frame_the_host_writes() {
        let read = |frame: Utf8Bytes| serde_json::from_str::<ServerFrame>(&frame).expect("a frame clients read");
        let r = RawValue::from_string("7".into()).unwrap();
        assert_eq!(
            read(ServerMsg::Pong { reference: Some(&r) }.encode()),
            ServerFrame::Pong {
                reference: Some(serde_json::json!(7))
            }
        );
        assert_eq!(read(ServerMsg::Ping.encode()), ServerFrame::Ping);
        let err = ProtocolError::new(ErrorCode::GuestFault, "gone");
        let frame = read(error_frame(&err, None, Some(&r)));
        assert!(frame.ends_seat(), "{frame:?}");
        // An operator's frames: a closed room ends the seat, a system
        // message (unnumbered, like a notice) does not.
        let closed = read(ServerMsg::Closed { reason: "maintenance" }.encode());
        assert!(closed.ends_seat(), "{closed:?}");
        let system = read(ServerMsg::System { message: "hello" }.encode());
        assert_eq!(
            system,
            ServerFrame::System {
                message: "hello".into()
            }
        );
        assert!(!system.ends_seat());
        let stamped = r#"{"seq":4,"type":"event","data":{"n":1}}"#;
        let event: ServerFrame = serde_json::from_str(stamped).unwrap();
        assert_eq!(event.seq(), Some(4));
        // A newer host's frame type and error code do not break a client.
        assert_eq!(
            serde_json::from_str::<ServerFrame>(r#"{"type":"teleported","x":1}"#).unwrap(),
            ServerFrame::Unknown
        );
        let newer: ServerFrame = serde_json::from_str(r#"{"type":"error","code":"brand_new","message":"m"}"#).unwrap();
        assert!(matches!(
            newer,
            ServerFrame::Error {
                code: ErrorCode::Unknown,
                ..
            }
        ));
    }
}
