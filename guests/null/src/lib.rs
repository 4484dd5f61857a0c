//! A guest that does nothing, written against the raw WIT bindings rather
//! than the SDK, so a call to it costs only what the host and the canonical
//! ABI cost. Benchmarks subtract it from real games to find the overhead.

#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({ path: "../../wit", world: "room" });

    use exports::respawn::game::game::{Guest, Player, PlayerId, Rejection};

    struct Null;

    impl Guest for Null {
        fn init(_: String, _: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
        fn on_join(_: Player) -> Result<(), Rejection> {
            Ok(())
        }
        fn on_leave(_: PlayerId) {}
        fn on_message(_: PlayerId, _: Vec<u8>) -> Result<(), Rejection> {
            Ok(())
        }
        fn on_tick(_: u64) {}
        fn snapshot() -> Vec<u8> {
            Vec::new()
        }
        fn restore(_: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
    }

    export!(Null);
}
