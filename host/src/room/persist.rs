//! Room state kept on disk across a host restart: written when the host
//! shuts down gracefully, read when the room is next created and removed
//! once the room has restored from it.
//! A file per room; the durable-storage work will replace this.

use super::PlayerId;
use super::registry::RoomKey;
use std::path::{Path, PathBuf};

/// A room as the host left it: the guest's state, who was in the room
/// (their connections did not survive; the game is told they left), and
/// the version that wrote the state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SavedRoom {
    pub players: Vec<PlayerId>,
    pub state: Vec<u8>,
    /// The version and digest that wrote it (absent in files of older
    /// hosts).
    pub version: Option<String>,
    pub digest: Option<String>,
}

/// The JSON line before the state's bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    players: Vec<PlayerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

fn path(state_dir: &Path, key: &RoomKey) -> PathBuf {
    // Room names may be `..`: the file name is the room's hex, never a path.
    state_dir
        .join("rooms")
        .join(&key.game)
        .join(format!("{}.state", crate::util::hex(key.room.as_bytes())))
}

/// Writes a room: a JSON line of its players and version, then the
/// state's bytes.
pub(crate) fn save(state_dir: &Path, key: &RoomKey, room: &SavedRoom) -> std::io::Result<()> {
    let file = path(state_dir, key);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let header = Header {
        players: room.players.clone(),
        version: room.version.clone(),
        digest: room.digest.clone(),
    };
    let mut bytes = serde_json::to_vec(&header)?;
    bytes.push(b'\n');
    bytes.extend_from_slice(&room.state);
    crate::util::write_atomic(&file, &bytes)
}

/// Reads a room's saved state, if any, leaving the file in place until
/// the room has restored from it ([`restored`]) or refused it
/// ([`set_aside`]): a host that dies in between finds it again. A damaged
/// file is set aside.
pub(crate) fn load(state_dir: &Path, key: &RoomKey) -> Option<SavedRoom> {
    let file = path(state_dir, key);
    let bytes = std::fs::read(&file).ok()?;
    let parsed = bytes.iter().position(|b| *b == b'\n').and_then(|nl| {
        let header: Header = serde_json::from_slice(&bytes[..nl]).ok()?;
        Some(SavedRoom {
            players: header.players,
            state: bytes[nl + 1..].to_vec(),
            version: header.version,
            digest: header.digest,
        })
    });
    if parsed.is_none() {
        set_aside(state_dir, key, "it is damaged");
    }
    parsed
}

/// The room restored from its saved state: the file has served.
pub(crate) fn restored(state_dir: &Path, key: &RoomKey) {
    let file = path(state_dir, key);
    if let Err(e) = std::fs::remove_file(&file) {
        tracing::warn!(file = %file.display(), "cannot remove a restored room state: {e}");
    }
}

/// The saved state cannot be used: it is renamed (`.refused-<unix ms>`),
/// not deleted, so an operator can still recover it, and the room starts
/// fresh.
pub(crate) fn set_aside(state_dir: &Path, key: &RoomKey, why: &str) {
    let file = path(state_dir, key);
    let aside = file.with_extension(format!("refused-{}", crate::unix_ms()));
    match std::fs::rename(&file, &aside) {
        Ok(()) => tracing::warn!(file = %aside.display(), "saved room state set aside: {why}"),
        Err(e) => tracing::warn!(file = %file.display(), "cannot set aside a saved room state ({why}): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_stays_until_restored_records_its_version_and_room_names_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let key = RoomKey {
            game: "chat".into(),
            room: "..".into(),
        };
        let room = SavedRoom {
            players: vec![1, 2],
            state: b"st\nate".to_vec(),
            version: Some("1.2.0".into()),
            digest: Some("ab".repeat(32)),
        };
        save(dir.path(), &key, &room).unwrap();
        assert!(path(dir.path(), &key).starts_with(dir.path().join("rooms/chat")));
        assert_eq!(load(dir.path(), &key), Some(room));
        // Not restored yet (the host may die here): still there.
        assert!(load(dir.path(), &key).is_some());
        restored(dir.path(), &key);
        assert_eq!(load(dir.path(), &key), None);
        // Damaged or refused: kept aside, never silently deleted.
        std::fs::write(path(dir.path(), &key), b"garbage").unwrap();
        assert_eq!(load(dir.path(), &key), None);
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("rooms/chat"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert!(aside[0].contains(".refused-"), "{aside:?}");
        // A file of an older host, without a version, still loads.
        std::fs::write(path(dir.path(), &key), b"{\"players\":[]}\nstate").unwrap();
        let old = load(dir.path(), &key).unwrap();
        assert_eq!((old.state.as_slice(), old.version), (&b"state"[..], None));
    }
}
