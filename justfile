# Respawn's verbs. `just run` to play, `just test` to check everything.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Guests that `just run` serves; `faulty` is built for tests only.
example_games := "echo chat tictactoe"
all_guests := "echo chat tictactoe faulty null"

# Build everything and serve the example games (ws 127.0.0.1:7700, tcp 127.0.0.1:7701).
run *args: guests
    cargo run -q -p respawn -- serve {{args}}

# Install the Debian wasm32-wasip1 toolchain if no other is present (root, Debian only).
toolchain:
    #!/usr/bin/env bash
    set -euo pipefail
    if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then exit 0; fi
    if [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src ] && [ -f /usr/lib/wasm32-wasi/libc.a ] && command -v wasm-ld >/dev/null; then exit 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's wasm32-wasi toolchain (rustc-web, rust-web-src, wasi-libc, lld)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src wasi-libc lld
    else
        echo "note: no wasm32-wasip1 toolchain found; run 'rustup target add wasm32-wasip1'" >&2
    fi

# Build the host binary (dev profile; dependencies are optimised).
host:
    cargo build -p respawn

# Build all guests to components in target/guests/; example games also go to modules/.
guests: toolchain host
    #!/usr/bin/env bash
    set -euo pipefail
    packages=(); for g in {{all_guests}}; do packages+=(-p "$g"); done
    if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
        # An ordinary laptop: the rustup target is installed.
        cargo build --profile guest --target wasm32-wasip1 --target-dir target/wasm "${packages[@]}"
    elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src ] && [ -f /usr/lib/wasm32-wasi/libc.a ]; then
        # No rustup target (it cannot be downloaded here): Debian's rustc
        # builds std from source against Debian's WASI libc.
        RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-C linker=wasm-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
            /usr/bin/cargo build --profile guest -Zbuild-std=std,panic_abort \
            --target wasm32-wasip1 --target-dir target/wasm "${packages[@]}"
    else
        echo "No wasm32-wasip1 toolchain. Either 'rustup target add wasm32-wasip1', or on Debian:" >&2
        echo "  apt-get install rustc-web cargo-web rust-web-src wasi-libc lld" >&2
        echo "('just toolchain' does the latter when run as root.)" >&2
        exit 1
    fi
    mkdir -p target/guests modules
    for g in {{all_guests}}; do
        target/debug/respawn component "target/wasm/wasm32-wasip1/guest/$g.wasm" -o "target/guests/$g.wasm"
    done
    for g in {{example_games}}; do cp "target/guests/$g.wasm" modules/; done

# Run all tests: unit tests, guests natively, end-to-end against a real host.
test: guests
    cargo test --workspace --no-fail-fast

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Benchmarks (criterion, release build); see BENCHMARKS.md.
bench: guests
    cargo bench -p respawn --bench room
