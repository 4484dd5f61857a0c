//! Echo: sends every message back to its sender, exactly as received.
//! The smallest useful game, and the one benchmarks call.

use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject, export_game, serde_json::Value};
use serde::{Deserialize, Serialize};

/// Counts what passed through, so a hot swap has state to carry.
#[derive(Default, Serialize, Deserialize)]
pub struct Echo {
    /// Messages echoed since the room was created.
    pub echoed: u64,
}

impl Game for Echo {
    type Message = Value;

    fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> {
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, msg: Value) -> Result<(), Reject> {
        self.echoed += 1;
        ctx.send(from, &msg);
        Ok(())
    }
}

export_game!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_guest_sdk::serde_json::json;
    use respawn_guest_sdk::testing::TestRoom;

    #[test]
    fn echoes_to_the_sender_only() {
        let mut room = TestRoom::<Echo>::new();
        room.join(1, "a").unwrap();
        room.join(2, "b").unwrap();
        room.message(1, &json!({"hello": [1, 2, 3]})).unwrap();
        assert_eq!(room.received(1), vec![json!({"hello": [1, 2, 3]})]);
        assert!(room.received(2).is_empty());
        assert_eq!(room.game().echoed, 1);
    }
}
