//! Reads game components from the modules folder. Every file that becomes
//! runnable code passes through [`load_file`]; a bad file is reported with
//! a stable code and skipped, never fatal.

use super::{GameModule, is_valid_game_name};
use crate::sandbox::{CompileError, Sandbox};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Largest module file the host reads.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Why a file in the modules folder was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file name is not `<game>.wasm` with a valid game name.
    #[error(
        "{path}: file name must be <game>.wasm, game being 1-32 of a-z 0-9 - _ starting with a letter"
    )]
    BadName {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_MODULE_BYTES`].
    #[error("{path}: {size} bytes is over the {MAX_MODULE_BYTES}-byte module limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The bytes are not a component of our world.
    #[error("{path}: {source}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// What the sandbox said.
        source: CompileError,
    },
}

impl LoadError {
    /// Stable code for logs (and, later, metrics and the audit log).
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "read_failed",
            LoadError::BadName { .. } => "bad_file_name",
            LoadError::TooLarge { .. } => "too_large",
            LoadError::Compile { source, .. } => source.code(),
        }
    }
}

/// Loads one `<game>.wasm` file: reads, hashes and compiles it.
pub fn load_file(sandbox: &Sandbox, path: &Path) -> Result<GameModule, LoadError> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| is_valid_game_name(s))
        .ok_or_else(|| LoadError::BadName {
            path: path.to_owned(),
        })?
        .to_owned();
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_MODULE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let digest = hex(&Sha256::digest(&bytes));
    let code = sandbox
        .compile(&bytes)
        .map_err(|source| LoadError::Compile {
            path: path.to_owned(),
            source,
        })?;
    Ok(GameModule {
        version: format!("sha256:{}", &digest[..12]),
        name,
        digest,
        size: bytes.len(),
        path: path.to_owned(),
        code,
    })
}

/// Loads every `*.wasm` file of `dir`, in name order. Returns the modules
/// that loaded and the errors of those that did not; other files are
/// ignored.
pub fn load_dir(
    sandbox: &Sandbox,
    dir: &Path,
) -> std::io::Result<(Vec<GameModule>, Vec<LoadError>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    paths.sort();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for path in paths {
        match load_file(sandbox, &path) {
            Ok(m) => ok.push(m),
            Err(e) => bad.push(e),
        }
    }
    Ok((ok, bad))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
