//! Turns a core wasm32-wasip1 module into a component of our world, with
//! the WASI preview1 reactor adapter matching the host's wasmtime.

use anyhow::Context;
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;

/// Wraps a core module built for wasm32-wasip1 (with the component type
/// information wit-bindgen embeds) into a component. A component is
/// returned unchanged.
pub fn componentize(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok(bytes.to_vec());
    }
    anyhow::ensure!(
        wasmparser::Parser::is_core_wasm(bytes),
        "input is neither a core WebAssembly module nor a component"
    );
    wit_component::ComponentEncoder::default()
        .module(bytes)
        .context("reading the module's component type information (was it built with the respawn guest SDK?)")?
        .adapter("wasi_snapshot_preview1", WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .context("loading the WASI preview1 adapter")?
        .validate(true)
        .encode()
        .context("encoding the component")
}
