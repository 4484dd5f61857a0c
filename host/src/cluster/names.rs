//! How rooms and nodes are named in JetStream. A game's name is already a
//! safe subject token; a room's name may hold `.` (a subject separator), so
//! it travels in hex.

use crate::storage::RoomRef;

/// The key of a room in the ownership bucket, and the tail of its subject.
pub fn room_key(room: &RoomRef) -> String {
    scoped_key(&room.game, &room.room)
}

/// `scope.<name in hex>`: a key or subject tail for any name under a safe
/// scope (a game, for its rooms and its storage keys; `_bans`). Read back
/// by [`parse_room_key`] when the scope is a game.
pub fn scoped_key(scope: &str, name: &str) -> String {
    format!("{scope}.{}", crate::util::hex(name.as_bytes()))
}

/// The room a [`room_key`] names; `None` for a key this host did not write.
pub fn parse_room_key(key: &str) -> Option<RoomRef> {
    let (game, hex) = key.split_once('.')?;
    if hex.len() % 2 != 0 || !crate::modules::is_valid_game_name(game) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(RoomRef {
        game: game.to_owned(),
        room: String::from_utf8(bytes).ok()?,
    })
}

/// The fleet's JetStream names, all under one prefix so fleets can share
/// a NATS cluster.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (letters, digits, `-`, `_`: checked by the
    /// config).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream of every room's records.
    pub fn rooms_stream(&self) -> String {
        format!("{}_rooms", self.prefix)
    }

    /// Subjects of [`rooms_stream`](Self::rooms_stream).
    pub fn rooms_subjects(&self) -> String {
        format!("{}.room.>", self.prefix)
    }

    /// The subject a room's records go to.
    pub fn room_subject(&self, room: &RoomRef) -> String {
        format!("{}.room.{}", self.prefix, room_key(room))
    }

    /// The bucket of node heartbeats.
    pub fn nodes_bucket(&self) -> String {
        format!("{}_nodes", self.prefix)
    }

    /// The bucket of room owners.
    pub fn owners_bucket(&self) -> String {
        format!("{}_owners", self.prefix)
    }

    /// The bucket that finds a seat's room from its token's hash.
    pub fn seats_bucket(&self) -> String {
        format!("{}_seats", self.prefix)
    }

    /// The bucket of the last deploy decision per game.
    pub fn deploys_bucket(&self) -> String {
        format!("{}_deploys", self.prefix)
    }

    /// The bucket of the games' storage.
    pub fn kv_bucket(&self) -> String {
        format!("{}_kv", self.prefix)
    }

    /// The object store of the signed modules the nodes loaded.
    pub fn modules_bucket(&self) -> String {
        format!("{}_modules", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_round_trip_any_room_name_and_refuse_foreign_keys() {
        for room in ["lobby", "a.b", ".x.", "Z-_9"] {
            let r = RoomRef {
                game: "chat".into(),
                room: room.into(),
            };
            let key = room_key(&r);
            assert_eq!(key.matches('.').count(), 1, "{key}");
            assert_eq!(parse_room_key(&key), Some(r));
        }
        for foreign in ["chat", "chat.zz", "chat.abc", "Bad.6162", ".6162"] {
            assert_eq!(parse_room_key(foreign), None, "{foreign}");
        }
    }
}
