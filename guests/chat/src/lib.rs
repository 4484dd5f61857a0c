//! Chat: members with names, messages broadcast to the room, join and leave
//! notices, and the recent history for newcomers.

use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject, export_game};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};

/// Longest accepted line, in characters.
pub const MAX_TEXT: usize = 500;
/// Lines kept for players who join later.
pub const HISTORY: usize = 20;

/// One line of chat.
#[derive(Clone, Serialize, Deserialize)]
pub struct Line {
    /// Sender id.
    pub id: PlayerId,
    /// Sender name at the time.
    pub from: String,
    /// What they said.
    pub text: String,
    /// Room clock when it was said.
    pub at: u64,
}

/// The room: who is here and what was said lately.
#[derive(Default, Serialize, Deserialize)]
pub struct Chat {
    /// Members by id.
    pub members: BTreeMap<PlayerId, String>,
    /// The last [`HISTORY`] lines.
    pub history: VecDeque<Line>,
}

/// A line as the room broadcasts it, serialized straight from the line
/// (no intermediate JSON value: this runs for every line said).
#[derive(Serialize)]
struct Said<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: PlayerId,
    from: &'a str,
    text: &'a str,
    at: u64,
}

/// What a member can send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// The line to post.
    pub say: String,
}

impl Game for Chat {
    type Message = Say;

    fn on_join(&mut self, ctx: &mut Ctx, p: &Player) -> Result<(), Reject> {
        let members: Vec<_> = self
            .members
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        // Who the host says the player is (with a join ticket): the
        // account's user id and the claims the host passes on.
        let you = p.user.as_ref().map(|u| {
            let claims: serde_json::Map<String, Value> = u
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
                .collect();
            json!({"user": u.user_id, "claims": claims})
        });
        ctx.send(
            p.id,
            &json!({"type": "welcome", "members": members, "history": self.history, "you": you}),
        );
        ctx.broadcast_except(p.id, &json!({"type": "joined", "id": p.id, "name": p.name}));
        self.members.insert(p.id, p.name.clone());
        Ok(())
    }

    fn on_leave(&mut self, ctx: &mut Ctx, player: PlayerId) {
        if let Some(name) = self.members.remove(&player) {
            ctx.broadcast(&json!({"type": "left", "id": player, "name": name}));
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, msg: Say) -> Result<(), Reject> {
        let Some(name) = self.members.get(&from) else {
            return Err(Reject::new("not-a-member", "join the room before you speak"));
        };
        let text = msg.say.trim();
        if text.is_empty() {
            return Err(Reject::new("empty", "say something"));
        }
        if text.chars().count() > MAX_TEXT {
            return Err(Reject::new(
                "too-long",
                format!("lines are at most {MAX_TEXT} characters"),
            ));
        }
        let line = Line {
            id: from,
            from: name.clone(),
            text: text.to_owned(),
            at: ctx.now_ms(),
        };
        ctx.broadcast(&Said {
            kind: "said",
            id: line.id,
            from: &line.from,
            text: &line.text,
            at: line.at,
        });
        self.history.push_back(line);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        Ok(())
    }
}

export_game!(Chat);

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_guest_sdk::testing::TestRoom;

    #[test]
    fn lines_reach_every_member_with_names_and_history() {
        let mut room = TestRoom::<Chat>::new();
        room.join(1, "ann").unwrap();
        room.set_now_ms(42);
        room.message(1, &json!({"say": " hi "})).unwrap();
        room.clear();
        room.join(2, "bob").unwrap();
        let to_bob = room.received(2);
        assert_eq!(to_bob[0]["type"], "welcome");
        assert_eq!(to_bob[0]["members"], json!([{"id": 1, "name": "ann"}]));
        assert_eq!(to_bob[0]["history"][0]["text"], "hi");
        assert_eq!(to_bob[0]["history"][0]["at"], 42);
        assert_eq!(
            room.received(1),
            vec![json!({"type": "joined", "id": 2, "name": "bob"})]
        );
        room.clear();
        room.message(2, &json!({"say": "yo"})).unwrap();
        for p in [1, 2] {
            assert_eq!(room.received(p)[0]["from"], "bob");
        }
        room.clear();
        room.leave(2);
        assert_eq!(room.received(1), vec![json!({"type": "left", "id": 2, "name": "bob"})]);
    }

    #[test]
    fn a_verified_player_is_told_its_user_id_and_claims() {
        let mut room = TestRoom::<Chat>::new();
        room.join(1, "ann").unwrap();
        assert_eq!(room.received(1)[0]["you"], Value::Null);
        let mut id = respawn_guest_sdk::Identity::new("user-7");
        id.claims.push(("tier".into(), "\"gold\"".into()));
        room.join_as(2, "bob", id).unwrap();
        assert_eq!(
            room.received(2)[0]["you"],
            json!({"user": "user-7", "claims": {"tier": "gold"}})
        );
    }

    #[test]
    fn bad_lines_are_rejected() {
        let mut room = TestRoom::<Chat>::new();
        room.join(1, "ann").unwrap();
        assert_eq!(room.message(1, &json!({"say": "  "})).unwrap_err().code, "empty");
        let long = "x".repeat(MAX_TEXT + 1);
        assert_eq!(room.message(1, &json!({"say": long})).unwrap_err().code, "too-long");
        assert_eq!(room.message(9, &json!({"say": "hi"})).unwrap_err().code, "not-a-member");
        assert_eq!(
            room.message(1, &json!({"shout": "hi"})).unwrap_err().code,
            "invalid-message"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut room = TestRoom::<Chat>::new();
        room.join(1, "ann").unwrap();
        for i in 0..HISTORY + 5 {
            room.message(1, &json!({"say": format!("line {i}")})).unwrap();
        }
        assert_eq!(room.game().history.len(), HISTORY);
        assert_eq!(room.game().history[0].text, "line 5");
    }
}
