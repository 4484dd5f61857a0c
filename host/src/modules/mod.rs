//! Game modules: turning files into compiled game versions, and the catalog
//! of games the host serves.

pub mod catalog;
pub mod componentize;
pub mod loader;

pub use catalog::{Catalog, GameModule};
pub use loader::{LoadError, load_dir, load_file};

/// Whether `name` can name a game: 1 to 32 of `a-z 0-9 - _`, starting with
/// a letter. Keeps names safe in file paths, URLs and log lines.
pub fn is_valid_game_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn game_names() {
        for ok in ["chat", "tic-tac-toe", "g2", "a_b"] {
            assert!(super::is_valid_game_name(ok), "{ok}");
        }
        for bad in ["", "Chat", "2d", "../x", "a b", &"x".repeat(33)] {
            assert!(!super::is_valid_game_name(bad), "{bad}");
        }
    }
}
