//! The compiled-module cache: worker components as wasmtime compiled them, kept on disk so a
//! restart, or a swap back to a module seen before, skips compilation.
//!
//! An artifact is named by the SHA-256 of the component's bytes and by a fingerprint of
//! everything that makes compiled code usable by an engine (wasmtime's version, the engine's
//! settings and the CPU features it compiled for), so a changed module or a changed engine is
//! simply a miss. Artifacts are written to a temporary file and linked into place, never
//! overwritten. Loading compiled code runs it without validation, so only this directory's own
//! artifacts are ever loaded, and only from a directory that this user owns and nobody else
//! may write to.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A component's identity: the SHA-256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The full digest in lowercase hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 12 hex digits: the version as tasks and listings show it.
    pub fn short(&self) -> String {
        let mut hex = self.hex();
        hex.truncate(12);
        hex
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Feeds `Hash` implementations into SHA-256, so the fingerprint is the same in every run.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the module cache {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing the module cache {path}: {reason}; compiled code loaded from it would run \
         unchecked"
    )]
    Unsafe { path: PathBuf, reason: String },
}

/// A directory of compiled components for one engine.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    /// Fingerprint of the engine's compatibility, part of every artifact's name.
    engine: String,
    /// Temporary file names, unique within this process.
    next_temp: AtomicU64,
}

impl ModuleCache {
    /// Opens (creating it if need be) the cache at `dir` for artifacts of `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        create_private_dir(dir).map_err(|source| CacheError::Create {
            path: dir.to_owned(),
            source,
        })?;
        check_private(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut engine = hex(&hasher.0.finalize());
        engine.truncate(16);
        Ok(Self {
            dir: dir.to_owned(),
            engine,
            next_temp: AtomicU64::new(0),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.engine))
    }

    /// The compiled component for `digest`, if this cache holds one this engine can run.
    pub fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path(digest);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is an artifact this cache wrote itself (`store` below), in a
        // directory `open` checked only this user can write to; its name pins the engine it
        // was compiled for, and wasmtime checks that again before it maps any code.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = format!("{error:#}"),
                    "ignoring an unusable cached module");
                None
            }
        }
    }

    /// Keeps `component`, compiled from the bytes with `digest`. An artifact already there is
    /// left alone; a failure costs only a recompilation later, so it is logged, not returned.
    pub fn store(&self, digest: &Digest, component: &Component) {
        let path = self.path(digest);
        if path.exists() {
            return;
        }
        let result = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|bytes| self.write_new(&path, &bytes));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "could not cache a compiled module");
        }
    }

    /// Writes `bytes` to a temporary file and links it in as `path`: readers see the whole
    /// artifact or none, and an existing artifact is never replaced.
    fn write_new(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.next_temp.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create_new(&temp).and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
        let linked = written.and_then(|()| match std::fs::hard_link(&temp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
        let _ = std::fs::remove_file(&temp);
        linked
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Refuses a directory someone else could plant artifacts in.
#[cfg(unix)]
fn check_private(dir: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::MetadataExt as _;
    let unsafe_dir = |reason: String| CacheError::Unsafe {
        path: dir.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| unsafe_dir(e.to_string()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to this user ({me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "group or others may write to it (mode {:o})",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_dir: &Path) -> Result<(), CacheError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_hex() {
        let digest = Digest::of(b"abc");
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest.short(), "ba7816bf8f01");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_directory_others_may_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir =
            std::env::temp_dir().join(format!("http-spawn-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let engine = Engine::default();
        let refused = ModuleCache::open(&dir, &engine);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let accepted = ModuleCache::open(&dir, &engine);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(refused, Err(CacheError::Unsafe { .. })),
            "{refused:?}"
        );
        assert!(accepted.is_ok(), "{accepted:?}");
    }
}
