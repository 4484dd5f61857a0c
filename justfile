# Respawn's verbs. `just run` to play, `just test` to check everything.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Guests that `just run` serves; `faulty`, `faulty-js` and `faulty-c` are built for tests only.
example_games := "echo chat tictactoe tictactoe-js tictactoe-c"
all_guests := "echo chat tictactoe faulty null"
# Guests in JavaScript (componentize-js from npm) and C (clang, wasi-libc).
js_guests := "tictactoe-js faulty-js"
c_guests := "tictactoe-c faulty-c"

# Build everything and serve the example games (demo site http://127.0.0.1:7703/).
run *args: guests
    cargo run -q -p respawn -- serve {{args}}

# Create the development signing key (.respawn/dev.key) on first use and trust it.
devkey: host
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -f .respawn/dev.key ]; then
        target/debug/respawn keygen --out .respawn/dev --comment "respawn development key"
    fi
    mkdir -p .respawn/trust
    cp .respawn/dev.pub .respawn/trust/dev.pub

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

# Build the release host for production (target/release/respawn).
release:
    cargo build --release -p respawn

# Build the host binary (dev profile; dependencies are optimised).
host:
    cargo build -p respawn

# Build all guests to components in target/guests/; example games also go to modules/.
guests: toolchain host devkey
    #!/usr/bin/env bash
    set -euo pipefail
    # JavaScript and C guests need Node.js or clang: without them the Rust
    # games are still built and served (`just test` insists on all).
    {{just_executable()}} js-guests || echo "warning: JavaScript guests not built (see above); the Rust and C games are served" >&2
    {{just_executable()}} c-guests || echo "warning: C guests not built (see above); the Rust and JavaScript games are served" >&2
    packages=(); for g in {{all_guests}}; do packages+=(-p "$g"); done
    if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
        # An ordinary laptop: the rustup target is installed.
        cargo=(cargo build --profile guest --target wasm32-wasip1 --target-dir target/wasm)
    elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src ] && [ -f /usr/lib/wasm32-wasi/libc.a ]; then
        # No rustup target (it cannot be downloaded here): Debian's rustc
        # builds std from source against Debian's WASI libc.
        export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
        export RUSTFLAGS="-C linker=wasm-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi"
        cargo=(/usr/bin/cargo build --profile guest -Zbuild-std=std,panic_abort --target wasm32-wasip1 --target-dir target/wasm)
    else
        echo "No wasm32-wasip1 toolchain. Either 'rustup target add wasm32-wasip1', or on Debian:" >&2
        echo "  apt-get install rustc-web cargo-web rust-web-src wasi-libc lld" >&2
        echo "('just toolchain' does the latter when run as root.)" >&2
        exit 1
    fi
    "${cargo[@]}" "${packages[@]}"
    mkdir -p target/guests modules
    for g in {{all_guests}}; do
        target/debug/respawn component "target/wasm/wasm32-wasip1/guest/$g.wasm" -o "target/guests/$g.wasm"
    done
    # Test-only variants of faulty (see guests/faulty/Cargo.toml).
    for feature in v2 strict fix; do
        "${cargo[@]}" -p faulty --features "$feature"
        target/debug/respawn component target/wasm/wasm32-wasip1/guest/faulty.wasm -o "target/guests/faulty-$feature.wasm"
    done
    # Example games are signed with the development key when they changed,
    # as `<crate version>-dev.<unix time>`: every rebuild is a newer version,
    # so a running `just run` hot-swaps it and a restart never meets the same
    # version with other bytes.
    for g in {{example_games}}; do
        [ -f "target/guests/$g.wasm" ] || continue
        if [ "target/guests/$g.wasm" -nt "modules/$g.wasm" ] \
            || ! target/debug/respawn verify "modules/$g.wasm" --trust .respawn/trust >/dev/null 2>&1; then
            if [ -f "guests/$g/package.json" ]; then
                base="$(node -p "require('./guests/$g/package.json').version")" || continue
            elif [ -f "guests/$g/Makefile" ]; then
                base="$(make -s -C "guests/$g" version)"
            else
                base="$(cargo pkgid -p "$g" | sed 's/.*[@#]//')"
            fi
            version="$base-dev.$(date +%s)"
            target/debug/respawn sign "target/guests/$g.wasm" --key .respawn/dev.key \
                --name "$g" --version "$version" --author "respawn examples" -o "modules/$g.wasm"
        fi
    done

# Root and Debian only; elsewhere it says what to install.
# Install Node.js 20+ and npm for JavaScript guests if missing.
js-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing nodejs and npm for the JavaScript guests"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
        else
            echo "JavaScript guests need Node.js 20 or newer with npm" >&2
            exit 1
        fi
    fi
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$major" -lt 20 ]; then
        echo "JavaScript guests need Node.js 20 or newer (found $(node --version)): Debian 13's, or NodeSource's on Debian 12" >&2
        exit 1
    fi

# Root and Debian only; elsewhere it says what to install.
# Install clang, its wasm32 builtins, wasi-libc and lld for C guests if missing.
c-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    # The proof is a trial build: a wasm32-wasi reactor that needs libc and
    # clang's builtins, linked by wasm-ld.
    probe() {
        command -v clang >/dev/null || return 1
        local dir; dir="$(mktemp -d)"
        printf '#include <stdlib.h>\nint f(long double x) { return x > (long double)rand(); }\n' > "$dir/p.c"
        clang --target=wasm32-wasi -mexec-model=reactor -O2 -o "$dir/p.wasm" "$dir/p.c" >/dev/null 2>&1
        local ok=$?
        rm -rf "$dir"
        return $ok
    }
    probe && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing clang, its wasm32 builtins, wasi-libc and lld for the C guests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang wasi-libc lld
        # clang's wasm32 builtins come in a package named after its version.
        v="$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "libclang-rt-$v-dev-wasm32"
        probe || { echo "clang still cannot build for wasm32-wasi" >&2; exit 1; }
    else
        echo "C guests need clang with wasm32 builtins, wasi-libc and wasm-ld" >&2
        echo "  (Debian: apt-get install clang libclang-rt-<clang version>-dev-wasm32 wasi-libc lld)" >&2
        exit 1
    fi

# The JavaScript SDK's build tools from npm (componentize-js, esbuild, TypeScript).
js-sdk: js-deps
    #!/usr/bin/env bash
    set -euo pipefail
    cd guest-sdk/js
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi

# JavaScript guests to components (rebuilt when a source changed).
js-guests: js-sdk
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target/guests
    for g in {{js_guests}}; do
        # Links the SDK for the game's tests, from the committed lock file.
        if [ ! -f "guests/$g/node_modules/.package-lock.json" ] || [ "guests/$g/package-lock.json" -nt "guests/$g/node_modules/.package-lock.json" ]; then
            (cd "guests/$g" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        fi
        out="target/guests/$g.wasm"
        if [ ! -f "$out" ] || [ -n "$(find "guests/$g" guest-sdk/js/src guest-sdk/js/bin guest-sdk/js/package-lock.json wit -newer "$out" -type f -not -path '*/node_modules/*' | head -1)" ]; then
            node guest-sdk/js/bin/respawn-js.mjs build "guests/$g/game.js" -o "$out"
        fi
    done

# C guests to components: clang for wasm32-wasi, then `respawn component`.
c-guests: c-deps host
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target/guests
    for g in {{c_guests}}; do
        make -s -C "guests/$g" OUT="$PWD/target/guests/$g.wasm" RESPAWN="$PWD/target/debug/respawn"
    done

# The browser tests run in Debian's chromium (see `browser`); the metrics
# tests run Debian's Prometheus and promtool, the fleet tests Debian's
# nats-server (see `test-deps`).
# Run all tests: unit, guests natively, end to end, browser.
test: guests js-guests c-guests test-deps
    #!/usr/bin/env bash
    set -uo pipefail
    cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
    status=${PIPESTATUS[0]}
    just guest-tests 2>&1 | tee target/guest-tests.log
    guest_status=${PIPESTATUS[0]}
    just browser 2>&1 | tee target/browser.log
    browser_status=${PIPESTATUS[0]}
    # One closing line for the whole run (cargo prints one per test binary,
    # node one per suite, each C test program one line).
    { grep -E '^test result:' target/test.log | awk '{print $4, $6, $8}'
      for log in target/guest-tests.log target/browser.log; do
          grep -E "^(ℹ|#) (pass|fail|skipped) [0-9]+" "$log" | awk '{n[$2] += $3} END {print n["pass"]+0, n["fail"]+0, n["skipped"]+0}'
      done
      grep -cE ': all checks passed$' target/guest-tests.log | awk '{print $1, 0, 0}'
      grep -cE '^[0-9]+ checks failed$' target/guest-tests.log | awk '{print 0, $1, 0}'
    } | awk '{p += $1; f += $2; s += $3} END {printf "tests: %d passed, %d failed, %d skipped\n", p, f, s}'
    [ "$status" = 0 ] && [ "$guest_status" = 0 ] && [ "$browser_status" = 0 ]

# Regenerate the C guest bindings from the WIT world after changing it (installs wit-bindgen-cli from crates.io if missing).
c-bindings:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v wit-bindgen >/dev/null || cargo install --locked wit-bindgen-cli@0.61.0
    wit-bindgen c wit --world room --out-dir guest-sdk/c/bindings

# Node's test runner for JS guests, a native test program per C guest.
# The unit tests of the JavaScript and C guests.
guest-tests: js-sdk
    #!/usr/bin/env bash
    set -uo pipefail
    status=0
    for g in {{js_guests}}; do
        if [ ! -f "guests/$g/node_modules/.package-lock.json" ] || [ "guests/$g/package-lock.json" -nt "guests/$g/node_modules/.package-lock.json" ]; then
            (cd "guests/$g" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || status=1
        fi
        if ls guests/$g/*.test.js >/dev/null 2>&1; then (cd "guests/$g" && node --test) || status=1; fi
    done
    for g in {{c_guests}}; do
        [ -f "guests/$g/test.c" ] || continue
        make -s -C "guests/$g" test || status=1
        rm -f "guests/$g/test-native"
    done
    # The WIT world's TypeScript declarations are what jco makes of it now.
    fresh="$(mktemp -d)"
    if ! (cd guest-sdk/js && node scripts/wit-types.mjs wit/world.wit "$fresh" >/dev/null); then
        echo "cannot generate the TypeScript declarations from wit/world.wit (see above; 'just js-sdk' installs jco)" >&2
        echo "1 checks failed"
        status=1
    elif diff -r guest-sdk/js/types "$fresh"; then
        echo "guest-sdk/js/types matches wit/world.wit: all checks passed"
    else
        echo "guest-sdk/js/types is stale: run 'npm run wit-types' in guest-sdk/js" >&2
        echo "1 checks failed"
        status=1
    fi
    rm -rf "$fresh"
    exit $status

# The metrics tests scrape a real host with Prometheus and lint it with
# promtool. Root and Debian only.
# The fleet tests start a three-server NATS JetStream cluster on loopback.
# Install Debian's prometheus (promtool too) and nats-server if missing.
test-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    # Prometheus for the metrics tests; nats-server for the fleet tests (a
    # three-server JetStream cluster on loopback).
    missing=()
    { command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
    { command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; } || missing+=(nats-server)
    [ ${#missing[@]} -eq 0 ] && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} for the metrics and fleet tests"
        apt-get update -qq
        # Not Prometheus's node exporter; where systemd runs, the packages
        # also start a Prometheus on :9090 and a NATS on :4222 (the tests
        # use their own ports).
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "warning: the metrics tests need Prometheus and promtool, the fleet tests nats-server" >&2
        echo "(apt-get install prometheus nats-server; brew install prometheus nats-server);" >&2
        echo "without them those tests fail and say so" >&2
    fi

# playwright-core drives /usr/bin/chromium; screenshots go to
# target/browser-artifacts/. Needs `just guests` first.
# The JS client's unit tests and the demo site in a real browser.
browser: browser-deps
    cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && npm test

# The tests never download a browser. Root and Debian only.
# Install Debian's chromium and Node.js for the browser tests if missing.
browser-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    [ ${#missing[@]} = 0 ] && exit 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} for the browser tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "the browser tests need: ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi

# A longer fault-injection soak (the short one runs in `just test`).
soak secs="60" clients="200": guests
    SOAK_SECS={{secs}} SOAK_CLIENTS={{clients}} cargo test -p respawn-e2e --test e2e soak -- --nocapture

# Arguments: transport, address, bots, seconds, lines per second per bot.
# Chat bots against a running host (`just run` in another terminal).
load kind="tcp" addr="127.0.0.1:7701" bots="50" secs="10" rate="5":
    cargo run -q --release -p respawn-client --example bots -- {{kind}} {{addr}} {{bots}} {{secs}} {{rate}}

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Fuzz what parses untrusted bytes: player frames, TCP lines, module
# signatures and manifests (cargo-fuzz, installed from crates.io if
# missing; libFuzzer needs a C++ compiler). `runs` inputs per target.
fuzz runs="10000000":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    cd tests/fuzz
    # cargo-fuzz passes unstable flags; stable rustc takes them this way.
    export RUSTC_BOOTSTRAP=1
    for target in protocol_request line_decoder signature manifest; do
        mkdir -p "corpus/$target"
        cargo fuzz run -s none --fuzz-dir . "$target" "corpus/$target" "seeds/$target" \
            -- -runs={{runs}} -max_len=4096 -print_final_stats=1 2>&1 \
            | grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' | sed "s/^/$target: /"
    done

# Benchmarks (criterion, release build); see BENCHMARKS.md.
bench: guests
    cargo bench -p respawn --bench room

# Tictactoe in Rust, JavaScript and C side by side (BENCHMARKS.md, "Guest languages").
bench-languages: guests
    cargo bench -p respawn --bench languages

# Durability levels side by side (BENCHMARKS.md, "Durability"): Respawn at
# off, checkpoint, journal and strict, pinned like load-compare; then the
# recovery of 1,000 rooms after kill -9. Writes target/durability.md.
bench-durability *args: guests
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p respawn -p respawn-load
    pin=(); if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin=(taskset -c 1); fi
    "${pin[@]}" target/release/respawn-load compare --scenarios a,b \
        --servers respawn@off,respawn@checkpoint,respawn@journal,respawn@strict \
        --rounds 7 --out target/durability.md --json target/durability.json {{args}}
    target/release/respawn-load recovery --rooms 1000 --inputs 10 | tee -a target/durability.md

# A fleet on NATS JetStream (BENCHMARKS.md, "Fleet"), in one run:
# replicated `strict` against SQLite, the failover of 1,000 rooms after
# kill -9 of their node, messages/s on three nodes against one, and a
# redirected join against a forwarding hop. Needs Debian's nats-server.
# Writes target/fleet.md (about 5 minutes).
bench-fleet *args: guests test-deps
    cargo build --release -p respawn -p respawn-load
    target/release/respawn-load fleet --rooms 1000 --inputs 10 {{args}} | tee target/fleet.md

# What observability costs on the data path (BENCHMARKS.md,
# "Observability"): Respawn as shipped (metrics, spans, heap sampling on)
# against `respawn-unobserved` (all three off), pinned like load-compare,
# scenarios a and b, seven interleaved rounds; then the guest call with and
# without its histogram. Writes target/observability.md.
bench-observability *args: guests
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p respawn -p respawn-load
    pin=(); if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin=(taskset -c 1); fi
    "${pin[@]}" target/release/respawn-load compare --scenarios a,b \
        --servers respawn,respawn-unobserved \
        --rounds 7 --out target/observability.md --json target/observability.json {{args}}
    cargo bench -p respawn --bench room -- 'call/' 2>&1 | grep -E '^call/|time:' | tee -a target/observability.md

# What a change costs on the data path: this build against the release
# build of another commit (default: the one before player authentication),
# both as Respawn, side by side like load-compare (scenarios a and b, five
# interleaved rounds). Writes target/base-compare.md (BENCHMARKS.md,
# "Player authentication").
bench-base commit="dd6b43f" *args: guests
    #!/usr/bin/env bash
    set -euo pipefail
    rm -rf target/base-src && git worktree prune
    git worktree add --detach target/base-src {{commit}}
    # The base shares this target folder (its dependencies are built
    # already); its binary is set aside before this build's is made.
    (cd target/base-src && CARGO_TARGET_DIR="$PWD/../" cargo build --release -p respawn)
    cp target/release/respawn target/respawn-base
    git worktree remove --force target/base-src
    cargo build --release -p respawn -p respawn-load
    pin=(); if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin=(taskset -c 1); fi
    "${pin[@]}" target/release/respawn-load compare --servers respawn,respawn-base --scenarios a,b \
        --rounds 5 --out target/base-compare.md --json target/base-compare.json {{args}}

# Servers pinned to core 0, the harness to core 1; writes target/load-compare.md
# and .json and puts the tables into BENCHMARKS.md. Extra flags go to
# `respawn-load compare` (see tests/load/README.md), e.g. `--scenarios a,b`.
# Load comparison on loopback: Respawn vs native tokio-tungstenite vs Colyseus.
load-compare *args: guests
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p respawn -p respawn-load
    if [ -f tests/load/colyseus/package.json ] && [ ! -d tests/load/colyseus/node_modules ] && command -v npm >/dev/null; then
        (cd tests/load/colyseus && npm ci --silent) \
            || echo "npm ci failed in tests/load/colyseus: Colyseus will be skipped" >&2
    fi
    pin=(); if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then pin=(taskset -c 1); fi
    "${pin[@]}" target/release/respawn-load compare --idle-max 19000 --splice-into BENCHMARKS.md {{args}}
