//! Why a room could not get a working instance: to start, to restart from
//! its checkpoint, or to move to another version. Typed, so callers decide
//! by kind (a full pool is `server_full`, the rest closes or aborts).

use crate::sandbox::{GuestFault, InstantiateError};

/// A room's instance could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RoomFailure {
    /// No instance could be created.
    #[error("the room could not start: {0}")]
    Instantiate(#[from] InstantiateError),
    /// The game's `init` refused the room.
    #[error("the game's init refused: {0}")]
    InitRefused(String),
    /// The game's `init` trapped.
    #[error("the game's init failed ({})", .0.kind.code())]
    InitTrapped(GuestFault),
    /// The game's `restore` refused a state.
    #[error("{version} refused the state: {why}")]
    RestoreRefused { version: String, why: String },
    /// The game's `restore` trapped.
    #[error("restore trapped on {version} ({})", .fault.kind.code())]
    RestoreTrapped { version: String, fault: GuestFault },
    /// Replaying a journaled input on a fresh instance trapped.
    #[error("replaying an input of {at} trapped: {fault}")]
    ReplayTrapped { at: u64, fault: GuestFault },
    /// The game's `snapshot` trapped.
    #[error("snapshot trapped on {version}")]
    SnapshotTrapped { version: String },
}

impl RoomFailure {
    /// Whether it is the instance pool being full (the host's capacity,
    /// not the game's fault).
    pub(crate) fn is_capacity(&self) -> bool {
        matches!(self, RoomFailure::Instantiate(InstantiateError::PoolExhausted(_)))
    }

    /// The guest's fault behind it, when the guest trapped.
    pub(crate) fn fault(&self) -> Option<&GuestFault> {
        match self {
            RoomFailure::InitTrapped(fault)
            | RoomFailure::RestoreTrapped { fault, .. }
            | RoomFailure::ReplayTrapped { fault, .. } => Some(fault),
            _ => None,
        }
    }
}

impl From<RoomFailure> for super::JoinError {
    fn from(f: RoomFailure) -> Self {
        if f.is_capacity() {
            super::JoinError::NoCapacity
        } else {
            super::JoinError::Closed(f.to_string())
        }
    }
}

/// One room's answer to a migration that it could not take.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{room}: {failure}")]
pub(crate) struct MoveRefused {
    pub room: String,
    pub failure: RoomFailure,
}
