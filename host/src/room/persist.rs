//! Room state kept on disk across a host restart: written when the host
//! shuts down gracefully, read (and removed) when the room is next created.
//! A file per room; the durable-storage work will replace this.

use super::PlayerId;
use super::registry::RoomKey;
use std::path::{Path, PathBuf};

/// A room as the host left it: the guest's state and who was in the room
/// (their connections did not survive; the game is told they left).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SavedRoom {
    pub players: Vec<PlayerId>,
    pub state: Vec<u8>,
}

fn path(state_dir: &Path, key: &RoomKey) -> PathBuf {
    // Room names may be `..`: the file name is the room's hex, never a path.
    state_dir
        .join("rooms")
        .join(&key.game)
        .join(format!("{}.state", crate::modules::trust::hex(key.room.as_bytes())))
}

/// Writes a room: a JSON line of its players, then the state's bytes.
pub(crate) fn save(state_dir: &Path, key: &RoomKey, room: &SavedRoom) -> std::io::Result<()> {
    let file = path(state_dir, key);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "players": room.players }))?;
    bytes.push(b'\n');
    bytes.extend_from_slice(&room.state);
    crate::modules::store::write_atomic(&file, &bytes)
}

/// Reads and removes a room's saved state, if any. A damaged file is
/// logged and ignored.
pub(crate) fn take(state_dir: &Path, key: &RoomKey) -> Option<SavedRoom> {
    let file = path(state_dir, key);
    let bytes = std::fs::read(&file).ok()?;
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(file = %file.display(), "cannot remove a restored room state: {e}");
    }
    let parsed = bytes.iter().position(|b| *b == b'\n').and_then(|nl| {
        #[derive(serde::Deserialize)]
        struct Header {
            players: Vec<PlayerId>,
        }
        let header: Header = serde_json::from_slice(&bytes[..nl]).ok()?;
        Some(SavedRoom {
            players: header.players,
            state: bytes[nl + 1..].to_vec(),
        })
    });
    if parsed.is_none() {
        tracing::warn!(file = %file.display(), "ignoring a damaged saved room");
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_is_taken_once_and_room_names_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let key = RoomKey {
            game: "chat".into(),
            room: "..".into(),
        };
        let room = SavedRoom {
            players: vec![1, 2],
            state: b"st\nate".to_vec(),
        };
        save(dir.path(), &key, &room).unwrap();
        assert!(path(dir.path(), &key).starts_with(dir.path().join("rooms/chat")));
        assert_eq!(take(dir.path(), &key), Some(room));
        assert_eq!(take(dir.path(), &key), None);
        std::fs::write(path(dir.path(), &key), b"garbage").unwrap();
        assert_eq!(take(dir.path(), &key), None);
    }
}
