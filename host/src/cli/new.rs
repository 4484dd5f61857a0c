//! `respawn new`: a game project to start from, in Rust, JavaScript,
//! TypeScript or C, that tests, builds and signs with the same commands as
//! the examples. The templates are compiled into the binary
//! (`host/templates/new/`).

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The languages a game can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// The Rust guest SDK (`guest-sdk/`).
    Rust,
    /// The JavaScript SDK (`guest-sdk/js`, componentize-js).
    Js,
    /// The JavaScript SDK with its TypeScript declarations.
    Ts,
    /// The C header SDK (`guest-sdk/c`, clang and wasi-libc).
    C,
}

/// One language's files: (path in the project, template text).
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    macro_rules! files {
        ($dir:literal: $($path:literal),* $(,)?) => {
            &[$(($path, include_str!(concat!("../../templates/new/", $dir, "/", $path)))),*]
        };
    }
    match lang {
        Lang::Rust => files!("rust": "Cargo.toml", "src/lib.rs", "README.md", ".gitignore"),
        Lang::Js => files!("js": "package.json", "src/game.js", "test/game.test.js", "README.md", ".gitignore"),
        Lang::Ts => {
            files!("ts": "package.json", "tsconfig.json", "src/game.ts", "test/game.test.ts", "README.md", ".gitignore")
        }
        Lang::C => files!("c": "Makefile", "game.c", "test.c", "README.md", ".gitignore"),
    }
}

/// The guest SDK folder of the checkout this binary was built from, if it
/// is still there.
fn built_in_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("guest-sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// Writes a new project for game `name` into `dir` (which must not exist
/// or be empty) and returns the files written. `sdk` is the checkout's
/// `guest-sdk` folder.
pub fn scaffold(name: &str, lang: Lang, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    if !crate::modules::is_valid_game_name(name) {
        bail!("`{name}` cannot name a game: use 1 to 32 of a-z 0-9 - _, starting with a letter");
    }
    let sdk = match sdk {
        Some(sdk) => sdk.to_owned(),
        None => built_in_sdk().context(
            "cannot find the guest SDK this respawn was built with: pass --sdk <your Respawn checkout>/guest-sdk",
        )?,
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the guest SDK folder {}", sdk.display()))?;
    for part in ["Cargo.toml", "js/package.json", "c/respawn.h"] {
        if !sdk.join(part).is_file() {
            bail!(
                "{} is not a guest SDK folder (no {part}): pass --sdk <your Respawn checkout>/guest-sdk",
                sdk.display()
            );
        }
    }
    let sdk_text = sdk
        .to_str()
        .context("the guest SDK's path is not UTF-8, which package files cannot name")?;
    // The paths go into JSON, TOML and a Makefile as they are.
    let plain = |p: &str| {
        p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '+' | '@' | ',' | '=' | '~' | '-'))
    };
    if !plain(sdk_text) {
        bail!(
            "the guest SDK's path {sdk_text} has characters a Makefile or package file would misread \
             (use only letters, digits and . _ / + @ , = ~ -): move the checkout to a plainer path"
        );
    }
    // The READMEs and the C Makefile name this very binary: a project
    // lives outside the checkout, where `respawn` is not on the PATH.
    let respawn = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .filter(|p| plain(p))
        .unwrap_or_else(|| "respawn".to_owned());
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty: choose another --dir", dir.display());
    }
    let mut written = Vec::new();
    for (path, text) in templates(lang) {
        let text = text
            .replace("{{name_snake}}", &name.replace('-', "_"))
            .replace("{{name}}", name)
            .replace("{{sdk}}", sdk_text)
            .replace("{{respawn}}", &respawn);
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

/// What to run next, per language.
pub fn next_steps(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => {
            "cargo test, then cargo build --release --target wasm32-wasip1 and respawn sign (see its README.md)"
        }
        Lang::Js | Lang::Ts => {
            "npm install && npm test (after `just js-sdk` once in the Respawn checkout), then npm run build and respawn sign (see its README.md)"
        }
        Lang::C => "make test, then make and respawn sign (see its README.md)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder shaped like the guest SDK.
    fn fake_sdk() -> tempfile::TempDir {
        let sdk = tempfile::tempdir().unwrap();
        for part in ["Cargo.toml", "js/package.json", "c/respawn.h"] {
            let file = sdk.path().join(part);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, "").unwrap();
        }
        sdk
    }

    #[test]
    fn every_language_fills_in_the_name_and_the_sdk() {
        let sdk = fake_sdk();
        for lang in [Lang::Rust, Lang::Js, Lang::Ts, Lang::C] {
            let out = tempfile::tempdir().unwrap();
            let dir = out.path().join("my-game");
            let files = scaffold("my-game", lang, &dir, Some(sdk.path())).unwrap();
            assert_eq!(files.len(), templates(lang).len());
            let all: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
            assert!(!all.contains("{{"), "{lang:?}: a placeholder is left");
            assert!(all.contains("my-game"), "{lang:?}");
            let canonical = sdk.path().canonicalize().unwrap();
            assert!(all.contains(canonical.to_str().unwrap()), "{lang:?}: the SDK's path");
        }
    }

    #[test]
    fn bad_names_wrong_sdks_and_occupied_folders_are_refused() {
        let sdk = fake_sdk();
        let out = tempfile::tempdir().unwrap();
        for bad in ["", "My Game", "9lives", "a/b"] {
            let e = scaffold(bad, Lang::Js, &out.path().join("x"), Some(sdk.path())).unwrap_err();
            assert!(e.to_string().contains("cannot name a game"), "{bad:?}: {e}");
        }
        let checkout = sdk.path().join("js");
        let e = scaffold("ok", Lang::Js, &out.path().join("y"), Some(&checkout)).unwrap_err();
        assert!(e.to_string().contains("not a guest SDK folder"), "{e}");
        std::fs::write(out.path().join("taken"), "").unwrap();
        let e = scaffold("ok", Lang::C, out.path(), Some(sdk.path())).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(!out.path().join("Makefile").exists(), "nothing written");
    }
}
