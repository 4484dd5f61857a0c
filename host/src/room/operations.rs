//! What operators do to one room (`respawn rooms`, `room`, `kick`, `close`,
//! `say`, and `/debug/rooms`): look inside it, remove a player, close it,
//! or speak to everyone in it. Each request goes through the room's control
//! channel, served before players' commands, and is answered by the room
//! itself, between two inputs.

use super::registry::{RoomKey, Rooms};
use super::{PlayerId, RoomCmd, RoomHandle};
use serde::Serialize;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long an operation waits for its room (a room answers between two
/// guest calls, each bounded by the call deadline).
pub const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Longest reason or message an operator may send, in bytes.
pub const MAX_TEXT: usize = 1024;

/// A request to a room and where its answer goes.
pub(crate) enum Operation {
    /// Describe the room.
    Inspect(oneshot::Sender<RoomView>),
    /// Remove `player`, telling them `reason`; answers whether they were
    /// in the room.
    Kick {
        player: PlayerId,
        reason: String,
        reply: oneshot::Sender<bool>,
    },
    /// Close the room, telling every player `reason`; answers how many
    /// were told.
    Close {
        reason: String,
        reply: oneshot::Sender<usize>,
    },
    /// A system message to every player; answers how many got it.
    Say {
        message: String,
        reply: oneshot::Sender<usize>,
    },
    /// Start sampling the room's guest code, until `until` at the latest
    /// (a profile nobody collects stops by itself).
    ProfileStart {
        until: std::time::Instant,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Stop sampling; answers the profile, to finish off the room's task.
    ProfileFinish(oneshot::Sender<Result<crate::sandbox::Profiling, String>>),
}

impl Operation {
    /// Whoever asked stopped waiting for the answer.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Operation::Inspect(r) => r.is_closed(),
            Operation::Kick { reply, .. } => reply.is_closed(),
            Operation::Close { reply, .. } | Operation::Say { reply, .. } => reply.is_closed(),
            Operation::ProfileStart { reply, .. } => reply.is_closed(),
            // Stopping a profile is wanted even when nobody waits for it.
            Operation::ProfileFinish(_) => false,
        }
    }
}

/// A room, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RoomView {
    /// The game.
    pub game: String,
    /// The room.
    pub room: String,
    /// The version it runs.
    pub version: String,
    /// Who is in it.
    pub players: Vec<PlayerView>,
    /// Commands waiting in its inbox (joins, messages, leaves).
    pub inbox: usize,
    /// The deepest player queue (frames waiting for a slow reader).
    pub outbound_max: usize,
    /// Guest calls made for its inputs.
    pub calls: u64,
    /// Guest calls that failed (each restarted the room).
    pub faults: u64,
    /// Restarts from its checkpoint.
    pub restarts: u64,
    /// Linear memory its instance holds, in bytes (0 while asleep).
    pub memory_bytes: usize,
    /// Whether it sleeps: quiet, its instance freed until the next input
    /// (`rooms.sleep_after_ms`).
    pub asleep: bool,
    /// When it last took an input (Unix ms; 0: never).
    pub last_input_ms: u64,
    /// When it opened (Unix ms).
    pub opened_ms: u64,
    /// Inputs journaled since its checkpoint.
    pub journal_entries: usize,
    /// Their bytes.
    pub journal_bytes: usize,
    /// Its tick period, if it ticks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// A candidate version shadows it.
    pub shadowed: bool,
}

/// A player in a room.
#[derive(Debug, Clone, Serialize)]
pub struct PlayerView {
    /// The player's id.
    pub id: PlayerId,
    /// The display name.
    pub name: String,
    /// The verified user id, when they joined with a ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Frames waiting in their queue.
    pub queued: usize,
}

/// Why an operation found no room or player.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// No such live room.
    #[error("no live room `{room}` of game `{game}`")]
    NoRoom {
        /// The game asked for.
        game: String,
        /// The room asked for.
        room: String,
    },
    /// The room is not in the room (any more).
    #[error("no player {0} in the room")]
    NoPlayer(PlayerId),
    /// The room did not answer in time (or closed meanwhile).
    #[error("the room did not answer within {0:?}")]
    Busy(Duration),
    /// The guest profile could not be taken (or was lost: the room moved
    /// to another version meanwhile).
    #[error("{0}")]
    Profile(String),
}

impl OperationError {
    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            OperationError::NoRoom { .. } => "unknown_room",
            OperationError::NoPlayer(_) => "unknown_player",
            OperationError::Busy(_) => "room_busy",
            OperationError::Profile(_) => "profile_failed",
        }
    }
}

fn no_room(game: &str, room: &str) -> OperationError {
    OperationError::NoRoom {
        game: game.to_owned(),
        room: room.to_owned(),
    }
}

impl RoomHandle {
    /// Commands waiting in the room's inbox.
    pub fn inbox_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Sends `make(reply)` to the room and waits for its answer: `None`
    /// if the room closed meanwhile, `Some(Err(()))` if it did not answer
    /// in time.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Operation) -> Option<Result<T, ()>> {
        let (reply, answer) = oneshot::channel();
        let asked = async {
            self.control.send(RoomCmd::Operate(make(reply))).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(ROOM_WAIT, asked).await {
            Ok(Some(answer)) => Some(Ok(answer)),
            Ok(None) => None,
            Err(_) => Some(Err(())),
        }
    }

    /// The room as it is now; `None` if it closed meanwhile.
    pub async fn inspect(&self) -> Option<Result<RoomView, OperationError>> {
        let answer = self.ask(Operation::Inspect).await?;
        Some(
            answer
                .map(|mut view| {
                    view.inbox = self.inbox_depth();
                    view
                })
                .map_err(|()| OperationError::Busy(ROOM_WAIT)),
        )
    }
}

impl Rooms {
    fn live(&self, game: &str, room: &str) -> Result<RoomHandle, OperationError> {
        self.handle(game, room).ok_or_else(|| no_room(game, room))
    }

    /// Asks the room `game`/`room`: a room that closes meanwhile is no
    /// room, one that does not answer in time is busy.
    async fn ask_room<T>(
        &self,
        game: &str,
        room: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Operation,
    ) -> Result<T, OperationError> {
        match self.live(game, room)?.ask(make).await {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(())) => Err(OperationError::Busy(ROOM_WAIT)),
            None => Err(no_room(game, room)),
        }
    }

    /// Every live room (of `game`, if given), with its handle, by name.
    pub fn handles(&self, game: Option<&str>) -> Vec<(String, String, RoomHandle)> {
        let mut all: Vec<(String, String, RoomHandle)> = self
            .live_handles()
            .into_iter()
            .filter(|(k, _)| game.is_none_or(|g| k.game == g))
            .map(|(RoomKey { game, room }, h)| (game, room, h))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// Every live room (of `game`, if given) as it is now, asked all at
    /// once; a room that does not answer in time is left out and counted.
    pub async fn inspect_all(&self, game: Option<&str>) -> (Vec<RoomView>, usize) {
        let asks = self
            .handles(game)
            .into_iter()
            .map(|(_, _, h)| async move { h.inspect().await });
        // Rooms that closed meanwhile are simply not listed.
        let answers: Vec<_> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let unanswered = answers.iter().filter(|a| a.is_err()).count();
        (answers.into_iter().filter_map(Result::ok).collect(), unanswered)
    }

    /// One room as it is now.
    pub async fn inspect(&self, game: &str, room: &str) -> Result<RoomView, OperationError> {
        match self.live(game, room)?.inspect().await {
            Some(view) => view,
            None => Err(no_room(game, room)),
        }
    }

    /// Removes `player` from the room, telling them `reason`.
    pub async fn kick(&self, game: &str, room: &str, player: PlayerId, reason: &str) -> Result<(), OperationError> {
        let reason = reason.to_owned();
        let found = self
            .ask_room(game, room, |reply| Operation::Kick { player, reason, reply })
            .await?;
        if found {
            Ok(())
        } else {
            Err(OperationError::NoPlayer(player))
        }
    }

    /// Closes the room, telling its players `reason`; how many were told.
    pub async fn close(&self, game: &str, room: &str, reason: &str) -> Result<usize, OperationError> {
        let reason = reason.to_owned();
        self.ask_room(game, room, |reply| Operation::Close { reason, reply })
            .await
    }

    /// Starts sampling the room's guest code, for `secs` at most.
    pub async fn start_profile(&self, game: &str, room: &str, secs: Duration) -> Result<(), OperationError> {
        // Past this a profile nobody collected is dropped by the room.
        let until = std::time::Instant::now() + secs + 2 * ROOM_WAIT;
        self.ask_room(game, room, |reply| Operation::ProfileStart { until, reply })
            .await?
            .map_err(OperationError::Profile)
    }

    /// Stops sampling the room's guest code; the profile, to be finished
    /// (written out) off the room's task.
    pub async fn finish_profile(&self, game: &str, room: &str) -> Result<crate::sandbox::Profiling, OperationError> {
        self.ask_room(game, room, Operation::ProfileFinish)
            .await?
            .map_err(OperationError::Profile)
    }

    /// Sends every player of the room a system message; how many got it.
    pub async fn say(&self, game: &str, room: &str, message: &str) -> Result<usize, OperationError> {
        let message = message.to_owned();
        self.ask_room(game, room, |reply| Operation::Say { message, reply })
            .await
    }
}
