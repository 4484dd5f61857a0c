//! Full games over both transports.

use respawn_e2e::{Client, Host, Transport};
use serde_json::{Value, json};

async fn mv(c: &mut Client, cell: i64) {
    c.message(json!({"action": "move", "cell": cell})).await;
}

/// The next `state` broadcast.
async fn state(c: &mut Client) -> Value {
    c.event_of("state").await
}

#[tokio::test]
async fn websocket_and_tcp_players_play_tictactoe_to_a_win() {
    play_tictactoe_to_a_win(&Host::start()).await;
}

/// A whole game of `tictactoe` on `host`, every rule on the way: also run
/// against the JavaScript build (see `languages.rs`).
pub(crate) async fn play_tictactoe_to_a_win(host: &Host) {
    let mut x = host.client(Transport::Ws).await;
    let mut o = host.client(Transport::Tcp).await;

    let joined = x.join("tictactoe", "match-1", "xena").await;
    assert_eq!(joined["game"], "tictactoe");
    assert!(joined["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(x.event().await, json!({"type": "seat", "mark": "X"}));
    assert_eq!(state(&mut x).await["status"], "waiting");

    // Alone at the table: moves are refused with the game's reason.
    mv(&mut x, 0).await;
    assert_eq!(x.expect_error("rejected").await["reason"], "waiting");

    o.join("tictactoe", "match-1", "otto").await;
    assert_eq!(o.event().await, json!({"type": "seat", "mark": "O"}));
    assert_eq!(state(&mut o).await["turn"], "X");
    assert_eq!(state(&mut x).await["status"], "playing");

    // Illegal moves: each gets an error with the game's code, and nothing changes.
    mv(&mut o, 4).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "not-your-turn");
    mv(&mut x, 9).await;
    assert_eq!(x.expect_error("rejected").await["reason"], "out-of-range");
    x.message(json!({"action": "teleport"})).await;
    assert_eq!(x.expect_error("rejected").await["reason"], "invalid-message");

    mv(&mut x, 4).await;
    for c in [&mut x, &mut o] {
        let s = state(c).await;
        assert_eq!(s["board"][4], "X");
        assert_eq!(s["turn"], "O");
    }
    mv(&mut o, 4).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "cell-taken");

    // A spectator arrives mid-game, sees the board, and may not play.
    let mut sam = host.client(Transport::Tcp).await;
    sam.join("tictactoe", "match-1", "sam").await;
    assert_eq!(sam.event().await, json!({"type": "seat", "mark": "spectator"}));
    assert_eq!(state(&mut sam).await["board"][4], "X");
    mv(&mut sam, 0).await;
    assert_eq!(sam.expect_error("rejected").await["reason"], "spectator");
    for c in [&mut x, &mut o] {
        assert_eq!(state(c).await["spectators"], 1, "players see the spectator arrive");
    }

    // O plays 0 and 2, X takes the middle column with 1 and 7.
    let mut last = Vec::new();
    for (is_x, cell) in [(false, 0), (true, 1), (false, 2), (true, 7)] {
        mv(if is_x { &mut x } else { &mut o }, cell).await;
        last.clear();
        for c in [&mut x, &mut o, &mut sam] {
            last.push(state(c).await);
        }
    }
    assert!(last.iter().all(|s| *s == last[0]), "everyone sees the same board");
    assert_eq!(last[0]["status"], "won");
    assert_eq!(last[0]["winner"], "X");
    assert_eq!(last[0]["line"], json!([1, 4, 7]));
    assert_eq!(
        last[0]["board"],
        json!(["O", "X", "O", null, "X", null, null, "X", null])
    );

    mv(&mut o, 8).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "game-over");
    o.message(json!({"action": "restart"})).await;
    for c in [&mut x, &mut o, &mut sam] {
        let s = state(c).await;
        assert_eq!(s["status"], "playing");
        assert_eq!(s["games"], 1, "the won game was counted");
    }
}

#[tokio::test]
async fn a_draw_is_reported_to_both_players() {
    play_tictactoe_to_a_draw(&Host::start()).await;
}

/// A drawn game of `tictactoe` on `host`.
pub(crate) async fn play_tictactoe_to_a_draw(host: &Host) {
    let mut x = host.client(Transport::Tcp).await;
    let mut o = host.client(Transport::Ws).await;
    x.join("tictactoe", "r", "x").await;
    o.join("tictactoe", "r", "o").await;
    // X O X / X O O / O X X
    let mut last = Value::Null;
    for (is_x, cell) in [
        (true, 0),
        (false, 1),
        (true, 2),
        (false, 4),
        (true, 3),
        (false, 5),
        (true, 7),
        (false, 6),
        (true, 8),
    ] {
        mv(if is_x { &mut x } else { &mut o }, cell).await;
        // Skip the states of the joins before the first move.
        loop {
            last = state(&mut o).await;
            if last["board"][cell as usize] != Value::Null {
                break;
            }
        }
    }
    assert_eq!(last["status"], "draw");
    assert_eq!(last["winner"], Value::Null);
}

#[tokio::test]
async fn chat_broadcast_reaches_every_member_and_only_them() {
    let host = Host::start();
    let mut ann = host.client(Transport::Ws).await;
    let mut bob = host.client(Transport::Tcp).await;
    let mut cat = host.client(Transport::Ws).await;
    let mut outsider = host.client(Transport::Tcp).await;
    let mut other_game = host.client(Transport::Tcp).await;

    ann.join("chat", "lounge", "ann").await;
    assert_eq!(ann.event().await["type"], "welcome");
    bob.join("chat", "lounge", "bob").await;
    assert_eq!(ann.event().await["name"], "bob", "ann hears bob join");
    cat.join("chat", "lounge", "cat").await;
    let welcome = cat.event().await;
    assert_eq!(welcome["members"].as_array().map(Vec::len), Some(2));
    outsider.join("chat", "elsewhere", "out").await;
    other_game.join("echo", "lounge", "eve").await;

    ann.message(json!({"say": "hello all"})).await;
    for c in [&mut ann, &mut bob, &mut cat] {
        let said = c.event_of("said").await;
        assert_eq!(said["from"], "ann");
        assert_eq!(said["text"], "hello all");
    }
    outsider.event().await; // its own welcome
    // Everyone in the room has the line: nothing of it reached elsewhere.
    outsider.expect_nothing_queued().await;
    other_game.expect_nothing_queued().await;

    // Leaving is announced to those who stay, and the leaver hears no more.
    bob.send(json!({"type": "leave", "ref": 5})).await;
    assert_eq!(bob.expect("left").await["ref"], 5);
    for c in [&mut ann, &mut cat] {
        assert_eq!(c.event_of("left").await["name"], "bob");
    }
    cat.message(json!({"say": "bye bob"})).await;
    assert_eq!(ann.event_of("said").await["text"], "bye bob");
    bob.expect_nothing_queued().await;
}
