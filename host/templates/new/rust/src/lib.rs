//! {{name}}: players say lines to everyone in the room. A starting point:
//! change the state, the messages and the handlers.

use respawn_guest_sdk::serde_json::json;
use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject, export_game};
use serde::{Deserialize, Serialize};

/// The room's state: everything a hot swap, a restart or a replay keeps.
#[derive(Default, Serialize, Deserialize)]
pub struct Room {
    /// Lines said in this room.
    pub lines: u64,
}

/// What players send; anything else is rejected as `invalid-message`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    say: String,
}

impl Game for Room {
    type Message = Say;

    fn on_join(&mut self, ctx: &mut Ctx, p: &Player) -> Result<(), Reject> {
        ctx.send(p.id, &json!({"type": "hello", "lines": self.lines}));
        ctx.broadcast_except(p.id, &json!({"type": "joined", "name": p.name}));
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, msg: Say) -> Result<(), Reject> {
        let text = msg.say.trim();
        if text.is_empty() || text.chars().count() > 200 {
            return Err(Reject::new("bad-line", "say 1 to 200 characters"));
        }
        self.lines += 1;
        ctx.broadcast(&json!({"type": "said", "from": from, "text": text}));
        Ok(())
    }
}

export_game!(Room);

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_guest_sdk::testing::TestRoom;

    #[test]
    fn a_line_reaches_everyone_and_is_counted() {
        let mut room = TestRoom::<Room>::new();
        room.join(1, "ann").unwrap();
        room.join(2, "bob").unwrap();
        room.clear();
        room.message(1, &json!({"say": "hello"})).unwrap();
        assert_eq!(room.received(2), vec![json!({"type": "said", "from": 1, "text": "hello"})]);
        assert_eq!(room.game().lines, 1);
        assert_eq!(room.message(1, &json!({"say": " "})).unwrap_err().code, "bad-line");
        assert_eq!(room.message(1, &json!({"shout": "x"})).unwrap_err().code, "invalid-message");
    }
}
