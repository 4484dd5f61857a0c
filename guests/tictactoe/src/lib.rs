//! Tic-tac-toe: two seated players take turns, everyone else watches.
//!
//! The first two players to join take X and O; later players become
//! spectators and take a seat when one frees up. Every change broadcasts the
//! whole board, so a client only ever renders the latest `state` event.
//!
//! Wins are counted in the game's storage, across rooms and restarts: per
//! verified user when the player joined with a ticket, else per display
//! name. The `state` of a won game carries the winner's total as
//! `winner_wins`.

use respawn_guest_sdk::{Ctx, Game, Level, Player, PlayerId, Reject, export_game};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Most spectators one room accepts beside its two players.
pub const MAX_SPECTATORS: usize = 32;

/// A seat and the mark it plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mark {
    X,
    O,
}

impl Mark {
    fn other(self) -> Mark {
        match self {
            Mark::X => Mark::O,
            Mark::O => Mark::X,
        }
    }
    fn seat(self) -> usize {
        self as usize
    }
}

/// Where the current game stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fewer than two players seated.
    #[default]
    Waiting,
    /// Both seated, `turn` is to move.
    Playing,
    /// Someone made three in a row.
    Won,
    /// The board filled up with no winner.
    Draw,
}

/// A person in the room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    /// Host-assigned id.
    pub id: PlayerId,
    /// Display name.
    pub name: String,
    /// The verified user id, if the player joined with a ticket. Kept out
    /// of broadcasts: other players see only `id` and `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Member {
    /// Where this member's wins are counted. Users and names live under
    /// different prefixes, so nobody can pick a name that reads another
    /// person's count.
    fn wins_key(&self) -> String {
        match &self.user_id {
            Some(user) => format!("wins/user/{user}"),
            None => format!("wins/name/{}", self.name),
        }
    }

    /// What other players see of this member.
    fn public(seat: &Option<Member>) -> serde_json::Value {
        seat.as_ref()
            .map_or(serde_json::Value::Null, |m| json!({"id": m.id, "name": m.name}))
    }
}

/// The whole room.
#[derive(Default, Serialize, Deserialize)]
pub struct TicTacToe {
    /// Cells 0..9, row by row.
    pub board: [Option<Mark>; 9],
    /// Seats for X and O.
    pub seats: [Option<Member>; 2],
    /// Everyone else, in arrival order.
    pub spectators: Vec<Member>,
    /// Whose move it is.
    pub turn: Option<Mark>,
    /// Where the game stands.
    pub status: Status,
    /// Who won, once `status` is `won`.
    pub winner: Option<Mark>,
    /// The winning cells.
    pub line: Option<[usize; 3]>,
    /// Finished games in this room.
    pub games: u32,
    /// The winner's total wins once `status` is `won`, if storage counted
    /// this one.
    #[serde(default)]
    pub winner_wins: Option<u64>,
}

/// What players send.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Place your mark on cell 0..=8.
    Move { cell: i64 },
    /// Start a new game after one has ended.
    Restart,
}

const LINES: [[usize; 3]; 8] = [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
    [0, 4, 8],
    [2, 4, 6],
];

impl TicTacToe {
    fn mark_of(&self, id: PlayerId) -> Option<Mark> {
        [Mark::X, Mark::O]
            .into_iter()
            .find(|m| self.seats[m.seat()].as_ref().is_some_and(|s| s.id == id))
    }

    fn seat_free_players(&mut self) {
        for mark in [Mark::X, Mark::O] {
            if self.seats[mark.seat()].is_none() && !self.spectators.is_empty() {
                self.seats[mark.seat()] = Some(self.spectators.remove(0));
            }
        }
    }

    fn new_game(&mut self) {
        self.board = [None; 9];
        self.winner = None;
        self.line = None;
        self.winner_wins = None;
        if self.seats.iter().all(Option::is_some) {
            self.status = Status::Playing;
            self.turn = Some(Mark::X);
        } else {
            self.status = Status::Waiting;
            self.turn = None;
        }
    }

    fn role(&self, id: PlayerId) -> &'static str {
        match self.mark_of(id) {
            Some(Mark::X) => "X",
            Some(Mark::O) => "O",
            None => "spectator",
        }
    }

    fn broadcast_state(&self, ctx: &mut Ctx) {
        ctx.broadcast(&json!({
            "type": "state",
            "board": self.board,
            "turn": self.turn,
            "status": self.status,
            "winner": self.winner,
            "line": self.line,
            "players": { "X": Member::public(&self.seats[0]), "O": Member::public(&self.seats[1]) },
            "spectators": self.spectators.len(),
            "games": self.games,
            "winner_wins": self.winner_wins,
        }));
    }

    fn tell_roles(&self, ctx: &mut Ctx) {
        for m in self.seats.iter().flatten() {
            ctx.send(m.id, &json!({"type": "seat", "mark": self.role(m.id)}));
        }
    }

    /// Adds the win to `mark`'s stored count and returns the new total.
    /// Storage is a bonus: if it fails, the game still ends normally and
    /// the operator sees a warning.
    fn count_win(&self, ctx: &mut Ctx, mark: Mark) -> Option<u64> {
        let key = self.seats[mark.seat()].as_ref()?.wins_key();
        let counted = ctx.kv().get::<u64>(&key).and_then(|wins| {
            let total = wins.unwrap_or(0).saturating_add(1);
            ctx.kv().set(&key, &total).map(|()| total)
        });
        match counted {
            Ok(total) => Some(total),
            Err(e) => {
                ctx.log(Level::Warn, &format!("win not counted under {key}: {e}"));
                None
            }
        }
    }

    fn play(&mut self, mark: Mark, cell: i64) -> Result<(), Reject> {
        match self.status {
            Status::Waiting => return Err(Reject::new("waiting", "waiting for an opponent")),
            Status::Won | Status::Draw => {
                return Err(Reject::new(
                    "game-over",
                    "the game is over: send {\"action\":\"restart\"}",
                ));
            }
            Status::Playing => {}
        }
        if self.turn != Some(mark) {
            return Err(Reject::new("not-your-turn", "wait for your opponent's move"));
        }
        let idx = usize::try_from(cell)
            .ok()
            .filter(|i| *i < 9)
            .ok_or_else(|| Reject::new("out-of-range", format!("cell {cell} is off the board (0 to 8)")))?;
        if self.board[idx].is_some() {
            return Err(Reject::new("cell-taken", format!("cell {idx} is already taken")));
        }
        self.board[idx] = Some(mark);
        if let Some(line) = LINES.iter().find(|l| l.iter().all(|&c| self.board[c] == Some(mark))) {
            self.status = Status::Won;
            self.winner = Some(mark);
            self.line = Some(*line);
            self.turn = None;
            self.games += 1;
        } else if self.board.iter().all(Option::is_some) {
            self.status = Status::Draw;
            self.turn = None;
            self.games += 1;
        } else {
            self.turn = Some(mark.other());
        }
        Ok(())
    }
}

impl Game for TicTacToe {
    type Message = Action;

    fn on_join(&mut self, ctx: &mut Ctx, p: &Player) -> Result<(), Reject> {
        let member = Member {
            id: p.id,
            name: p.name.clone(),
            user_id: p.user.as_ref().map(|u| u.user_id.clone()),
        };
        if let Some(free) = self.seats.iter_mut().find(|s| s.is_none()) {
            *free = Some(member);
            if self.seats.iter().all(Option::is_some) {
                self.new_game();
            }
        } else if self.spectators.len() < MAX_SPECTATORS {
            self.spectators.push(member);
        } else {
            return Err(Reject::new("room-full", "this room is full"));
        }
        ctx.send(p.id, &json!({"type": "seat", "mark": self.role(p.id)}));
        self.broadcast_state(ctx);
        Ok(())
    }

    fn on_leave(&mut self, ctx: &mut Ctx, player: PlayerId) {
        self.spectators.retain(|s| s.id != player);
        let Some(mark) = self.mark_of(player) else {
            self.broadcast_state(ctx);
            return;
        };
        self.seats[mark.seat()] = None;
        self.seat_free_players();
        if self.status == Status::Playing {
            // The pair changed: the unfinished game is void.
            self.new_game();
        } else if self.seats.iter().any(Option::is_none) {
            self.status = Status::Waiting;
            self.turn = None;
        }
        self.tell_roles(ctx);
        self.broadcast_state(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, action: Action) -> Result<(), Reject> {
        let Some(mark) = self.mark_of(from) else {
            return Err(Reject::new("spectator", "spectators cannot play"));
        };
        match action {
            Action::Move { cell } => {
                self.play(mark, cell)?;
                if self.status == Status::Won {
                    self.winner_wins = self.count_win(ctx, mark);
                }
            }
            Action::Restart => {
                if matches!(self.status, Status::Playing | Status::Waiting) {
                    return Err(Reject::new("game-not-over", "finish this game first"));
                }
                self.new_game();
            }
        }
        self.broadcast_state(ctx);
        Ok(())
    }
}

export_game!(TicTacToe);

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_guest_sdk::Identity;
    use respawn_guest_sdk::testing::{Effect, TestRoom};

    fn mv(cell: i64) -> serde_json::Value {
        json!({"action": "move", "cell": cell})
    }

    fn room_with_two() -> TestRoom<TicTacToe> {
        let mut room = TestRoom::new();
        room.join(1, "xena").unwrap();
        room.join(2, "otto").unwrap();
        room.clear();
        room
    }

    #[test]
    fn x_wins_a_row_and_everyone_sees_it() {
        let mut room = room_with_two();
        for (p, c) in [(1, 0), (2, 3), (1, 1), (2, 4), (1, 2)] {
            room.message(p, &mv(c)).unwrap();
        }
        let last = room.received(2).pop().unwrap();
        assert_eq!(last["status"], "won");
        assert_eq!(last["winner"], "X");
        assert_eq!(last["line"], json!([0, 1, 2]));
        assert_eq!(room.message(2, &mv(5)).unwrap_err().code, "game-over");
        room.message(2, &json!({"action": "restart"})).unwrap();
        assert_eq!(room.game().status, Status::Playing);
        assert_eq!(room.game().games, 1);
    }

    #[test]
    fn draw_is_detected() {
        let mut room = room_with_two();
        // X O X / X O O / O X X
        for (p, c) in [(1, 0), (2, 1), (1, 2), (2, 4), (1, 3), (2, 5), (1, 7), (2, 6), (1, 8)] {
            room.message(p, &mv(c)).unwrap();
        }
        assert_eq!(room.game().status, Status::Draw);
        assert_eq!(room.game().winner, None);
    }

    #[test]
    fn illegal_moves_are_rejected_and_change_nothing() {
        let mut room = room_with_two();
        assert_eq!(room.message(2, &mv(0)).unwrap_err().code, "not-your-turn");
        assert_eq!(room.message(1, &mv(9)).unwrap_err().code, "out-of-range");
        assert_eq!(room.message(1, &mv(-1)).unwrap_err().code, "out-of-range");
        room.message(1, &mv(4)).unwrap();
        assert_eq!(room.message(2, &mv(4)).unwrap_err().code, "cell-taken");
        assert_eq!(
            room.message(2, &json!({"action": "fly"})).unwrap_err().code,
            "invalid-message"
        );
        // serde reads an internally tagged unit variant without looking at
        // other fields: a restart with extras is a restart (the JavaScript
        // and C builds read it the same way).
        assert_eq!(
            room.message(2, &json!({"action": "restart", "cell": 1}))
                .unwrap_err()
                .code,
            "game-not-over"
        );
        assert_eq!(room.game().board.iter().flatten().count(), 1);
        assert_eq!(room.game().turn, Some(Mark::O));
    }

    #[test]
    fn third_player_watches_and_takes_a_free_seat() {
        let mut room = room_with_two();
        room.join(3, "sam").unwrap();
        assert_eq!(room.received(3)[0], json!({"type": "seat", "mark": "spectator"}));
        assert_eq!(room.message(3, &mv(0)).unwrap_err().code, "spectator");
        room.message(1, &mv(0)).unwrap();
        room.clear();
        room.leave(2);
        assert_eq!(room.received(3)[0], json!({"type": "seat", "mark": "O"}));
        assert_eq!(room.game().status, Status::Playing);
        assert!(room.game().board.iter().all(Option::is_none), "new seats, new game");
    }

    /// X takes the top row while O plays the middle one.
    fn x_wins(room: &mut TestRoom<TicTacToe>) -> serde_json::Value {
        for (p, c) in [(1, 0), (2, 3), (1, 1), (2, 4), (1, 2)] {
            room.message(p, &mv(c)).unwrap();
        }
        room.received(2).pop().unwrap()
    }

    #[test]
    fn wins_are_counted_in_storage_across_games_and_rooms() {
        let mut room = room_with_two();
        let first = x_wins(&mut room);
        assert_eq!(first["winner_wins"], 1);
        room.message(2, &json!({"action": "restart"})).unwrap();
        assert_eq!(room.received(2).pop().unwrap()["winner_wins"], json!(null));
        assert_eq!(x_wins(&mut room)["winner_wins"], 2);
        assert_eq!(room.kv().get::<u64>("wins/name/xena"), Ok(Some(2)));
        assert_eq!(room.kv().keys(), ["wins/name/xena"], "the loser is not counted");

        // Another room of the game reads the same storage.
        let mut other = TestRoom::<TicTacToe>::new().with_kv(room.kv().clone());
        other.join(1, "xena").unwrap();
        other.join(2, "otto").unwrap();
        assert_eq!(x_wins(&mut other)["winner_wins"], 3);
        assert_eq!(
            room.swap().map(|_| room.game().winner_wins),
            Ok(Some(2)),
            "the total survives a swap"
        );
    }

    #[test]
    fn a_verified_player_is_counted_by_user_id_which_others_do_not_see() {
        let mut room = TestRoom::new();
        room.join_as(1, "xena", Identity::new("u-7")).unwrap();
        room.join(2, "otto").unwrap();
        let last = x_wins(&mut room);
        assert_eq!(last["winner_wins"], 1);
        assert_eq!(last["players"]["X"], json!({"id": 1, "name": "xena"}));
        assert_eq!(room.kv().keys(), ["wins/user/u-7"]);
    }

    #[test]
    fn a_win_stands_when_storage_fails() {
        let mut room = room_with_two();
        room.set_kv_quota(Some(4));
        let last = x_wins(&mut room);
        assert_eq!(last["status"], "won");
        assert_eq!(last["winner"], "X");
        assert_eq!(last["winner_wins"], json!(null));
        let warned = room
            .take_effects()
            .into_iter()
            .any(|e| matches!(e, Effect::Log { level: Level::Warn, message } if message.contains("wins/name/xena")));
        assert!(warned, "the operator is told");
        room.message(2, &json!({"action": "restart"})).unwrap();
        assert_eq!(room.game().status, Status::Playing);

        room.set_kv_quota(None);
        room.kv().set("wins/name/xena", "many").unwrap();
        assert_eq!(
            x_wins(&mut room)["winner_wins"],
            json!(null),
            "an unreadable count is left alone"
        );
        assert_eq!(room.kv().get::<String>("wins/name/xena"), Ok(Some("many".into())));
    }

    #[test]
    fn state_survives_a_swap() {
        let mut room = room_with_two();
        room.message(1, &mv(4)).unwrap();
        room.swap().unwrap();
        assert_eq!(room.game().board[4], Some(Mark::X));
        assert_eq!(room.message(1, &mv(0)).unwrap_err().code, "not-your-turn");
    }
}
