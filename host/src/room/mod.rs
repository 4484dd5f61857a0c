//! Rooms: one task per room owns the room's guest instance and its players.
//!
//! Sessions talk to a room only through its bounded command channel, and the
//! room talks back only through each player's bounded outbound queue, so a
//! room never waits on a socket and a socket never touches a Store.
//! Operators reach it through a second, small channel that the room serves
//! first.

mod crash;
mod failure;
pub mod journal;
pub mod operations;
mod registry;
mod task;

pub use registry::{Joiner, Rooms};
pub use task::RecoveredSeat;

use crate::modules::GameModule;
use crate::protocol::{ErrorCode, ProtocolError};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// A player's id, unique within this host process (one per connection).
pub type PlayerId = u64;

/// What a room sends to one player's session.
#[derive(Debug)]
pub enum ToSession {
    /// A frame to write to the player.
    Frame(Utf8Bytes),
    /// A reply to the player's request that is not part of the room's
    /// story (its input was refused before the game saw it): written
    /// unnumbered, never held back for durability, never replayed.
    Notice(Utf8Bytes),
    /// A last frame: the player is no longer in the room (kicked, or the
    /// room closed).
    Removed(Utf8Bytes),
    /// The host is shutting down; the room has checkpointed and closed.
    Shutdown,
    /// The room moved to another node (this frame says so): the
    /// connection closes, and the player resumes there.
    Moved(Utf8Bytes),
}

/// A player's end of what a room sends: the queue of frames, and the signal
/// the room raises when that queue overflowed and it gave the player up,
/// so a session blocked on a player who stopped reading learns of it at
/// once instead of after its write timeout.
pub struct Frames {
    pub(crate) queue: crate::mailbox::Receiver<ToSession>,
    pub(crate) overflow: CancellationToken,
}

/// A request to a room.
pub(crate) enum RoomCmd {
    Join {
        player: PlayerId,
        name: String,
        /// The verified identity, when the player joined with a ticket.
        user: Option<crate::auth::User>,
        outbound: crate::mailbox::Sender<ToSession>,
        overflow: CancellationToken,
        /// The hash of the player's resume token, kept with the seat so a
        /// resume finds it after a restart.
        seat: Option<String>,
        reply: oneshot::Sender<Result<Joined, JoinError>>,
    },
    Message {
        player: PlayerId,
        payload: Bytes,
        reference: Option<Box<RawValue>>,
    },
    Leave {
        player: PlayerId,
    },
    /// Prepare to run `module` (snapshot, new instance, restore), report on
    /// `ready`, then commit or abort as `decision` says.
    Swap {
        module: Arc<GameModule>,
        ready: oneshot::Sender<Result<(), failure::MoveRefused>>,
        decision: oneshot::Receiver<bool>,
    },
    /// Feed copies of the inputs from now on (and the journal since the
    /// checkpoint) to a shadow of another version.
    Shadow {
        feed: crate::deploy::shadow::Feed,
    },
    /// Remove every player of this user (a ban), telling them `reason`.
    KickUser {
        user: String,
        reason: String,
    },
    /// Save the state for the next start, tell the players, close.
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Another node owns the room now: stop without saving or releasing
    /// anything, and send the players on.
    Moved {
        done: oneshot::Sender<()>,
    },
    /// An operator's request (see [`operations`]).
    Operate(operations::Operation),
}

/// A successful join.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The game version the room runs.
    pub version: String,
}

/// Why a join failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// No such game is loaded.
    #[error("no game named `{game}` (loaded: {loaded})")]
    UnknownGame {
        /// What was asked for.
        game: String,
        /// What exists, comma-separated.
        loaded: String,
    },
    /// The room is at `rooms.max_players`.
    #[error("the room is full ({0} players)")]
    Full(usize),
    /// The game refused.
    #[error("{message}")]
    Refused {
        /// The game's code.
        code: String,
        /// The game's message.
        message: String,
    },
    /// The room could not start or has closed.
    #[error("{0}")]
    Closed(String),
    /// No instance slot is free.
    #[error("the host is at its room limit; try again later")]
    NoCapacity,
    /// The player's connection or address created rooms too fast.
    #[error("too many new rooms from this connection or address; join an existing room or try again later")]
    TooManyRooms,
    /// The game failed on the join; the room restarted without it.
    #[error("{0}")]
    Fault(String),
    /// The host cannot save the room now (its storage is failing).
    #[error("the host cannot save rooms right now; try again later")]
    StorageUnavailable,
    /// The user already has a seat in the room (as this player) and may
    /// have only one (`auth.one_seat_per_user`).
    #[error("you already have a seat in this room, on another connection")]
    Seated(PlayerId),
    /// The room lives on another node of the fleet.
    #[error("the room lives on node {}", .0.id)]
    Elsewhere(crate::protocol::NodeAddress),
}

impl JoinError {
    /// The protocol error a player sees, and the game's reason if any.
    pub fn to_protocol(&self) -> (ProtocolError, Option<&str>) {
        let code = match self {
            JoinError::UnknownGame { .. } => ErrorCode::UnknownGame,
            JoinError::Full(_) => ErrorCode::RoomFull,
            JoinError::Refused { .. } => ErrorCode::JoinRefused,
            JoinError::Closed(_) => ErrorCode::RoomClosed,
            JoinError::NoCapacity => ErrorCode::ServerFull,
            JoinError::TooManyRooms => ErrorCode::TooManyRooms,
            JoinError::Fault(_) => ErrorCode::GuestRestarted,
            JoinError::StorageUnavailable => ErrorCode::StorageUnavailable,
            JoinError::Seated(_) => ErrorCode::AlreadyJoined,
            JoinError::Elsewhere(_) => ErrorCode::RoomElsewhere,
        };
        let reason = match self {
            JoinError::Refused { code, .. } => Some(code.as_str()),
            _ => None,
        };
        (ProtocolError::new(code, self.to_string()), reason)
    }
}

/// A way to reach a live room.
#[derive(Clone)]
pub struct RoomHandle {
    id: u64,
    tx: mpsc::Sender<RoomCmd>,
    /// Operators' commands (migrate, shut down), served before players'
    /// ones: a slow room with a full inbox can still be rolled back.
    control: mpsc::Sender<RoomCmd>,
    /// The version the room runs, updated by the room on swap.
    running: Arc<Mutex<Arc<GameModule>>>,
}

/// The room is gone; the command was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("the room has closed")]
pub struct RoomGone;

impl RoomHandle {
    /// The version of the game the room runs now.
    pub fn version(&self) -> String {
        crate::lock(&self.running).version.to_string()
    }

    /// Hands a player's message to the room, waiting if its inbox is full.
    pub async fn message(
        &self,
        player: PlayerId,
        payload: Bytes,
        reference: Option<Box<RawValue>>,
    ) -> Result<(), RoomGone> {
        self.tx
            .send(RoomCmd::Message {
                player,
                payload,
                reference,
            })
            .await
            .map_err(|_| RoomGone)
    }

    /// Tells the room the player left. The room then drops the player's
    /// outbound queue, which ends the session's stream of room frames.
    pub async fn leave(&self, player: PlayerId) -> Result<(), RoomGone> {
        self.tx.send(RoomCmd::Leave { player }).await.map_err(|_| RoomGone)
    }
}
