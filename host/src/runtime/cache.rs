//! The compiled-module cache: worker components as wasmtime compiled them, kept on disk so a
//! restart, or a swap back to a module seen before, skips compilation.
//!
//! An artifact is named by the SHA-256 of the component's bytes and by a fingerprint of
//! everything that makes compiled code usable by an engine (wasmtime's version, the engine's
//! settings and the CPU features it compiled for), so a changed module or a changed engine is
//! simply a miss. Artifacts are written to a temporary file and linked into place, never
//! overwritten. Loading compiled code runs it without validation, so an artifact is loaded only
//! if nobody but this user could have put it there: the directory is resolved to its real path
//! at start, it and every directory above it must be this user's or root's and closed to other
//! writers (or root's sticky `/tmp`), and the artifact itself must be a regular file of this
//! user's, opened without following symlinks and read whole before wasmtime sees it.

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

/// Lowercase hex, two digits a byte. Runs once per submission (the task's module digest), so
/// it looks digits up rather than formatting each byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
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
        let create = |source| CacheError::Create {
            path: dir.to_owned(),
            source,
        };
        create_private_dir(dir).map_err(create)?;
        let dir = &dir.canonicalize().map_err(create)?;
        check_private(dir)?;
        for ancestor in dir.ancestors().skip(1) {
            check_ancestor(ancestor)?;
        }
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
        let bytes = match read_own_file(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring a cached module");
                return None;
            }
        };
        // SAFETY: the bytes are an artifact this cache wrote itself (`store` below): a regular
        // file of this user's, in a directory that `open` checked only this user (or root) can
        // write to, all the way up. Its name pins the engine it was compiled for, and wasmtime
        // checks that again before it maps any code.
        match unsafe { Component::deserialize(engine, &bytes) } {
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

/// Refuses a directory above the cache through which someone else could swap the cache for
/// theirs: it must be root's or this user's, and closed to other writers unless it is root's
/// and sticky (as `/tmp` is), where nobody can rename another user's entries.
#[cfg(unix)]
fn check_ancestor(dir: &Path) -> Result<(), CacheError> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |reason: String| CacheError::Unsafe {
        path: dir.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let (owner, mode) = (meta.uid(), meta.mode());
    if owner != 0 && owner != me {
        return Err(refuse(format!(
            "a directory above the cache belongs to uid {owner}"
        )));
    }
    let sticky_root = owner == 0 && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_root {
        return Err(refuse(format!(
            "others may write to a directory above the cache (mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_ancestor(_dir: &Path) -> Result<(), CacheError> {
    Ok(())
}

/// The whole content of `path` if it is a regular file of this user's that nobody else may
/// write, opened without following a symlink; `None` if there is no such file.
#[cfg(unix)]
fn read_own_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "not a regular file of this user's closed to others (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

#[cfg(not(unix))]
fn read_own_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
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

    /// A scratch directory for one test, under the system's temporary directory.
    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("http-spawn-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[cfg(unix)]
    #[test]
    fn loads_only_its_own_regular_artifacts() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("cache-artifacts");
        let engine = Engine::default();
        let cache = ModuleCache::open(&dir, &engine).expect("a private cache");
        // The smallest component: the header alone.
        let bytes = b"\0asm\x0d\0\x01\0";
        let component = Component::new(&engine, bytes).expect("the empty component");
        let digest = Digest::of(bytes);
        assert!(cache.load(&engine, &digest).is_none(), "nothing cached yet");
        cache.store(&digest, &component);
        assert!(
            cache.load(&engine, &digest).is_some(),
            "its own artifact loads"
        );

        let artifact = cache.path(&digest);
        let elsewhere = dir.with_extension("planted");
        std::fs::rename(&artifact, &elsewhere).expect("move");
        std::os::unix::fs::symlink(&elsewhere, &artifact).expect("symlink");
        let through_link = cache.load(&engine, &digest);
        std::fs::remove_file(&artifact).expect("unlink");
        std::fs::rename(&elsewhere, &artifact).expect("move back");
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let writable = cache.load(&engine, &digest);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            through_link.is_none(),
            "a symlinked artifact is not followed"
        );
        assert!(
            writable.is_none(),
            "an artifact others may write is not loaded"
        );
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_cache_under_a_directory_others_may_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let open_parent = scratch("cache-open-parent");
        std::fs::create_dir_all(&open_parent).expect("mkdir");
        std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let refused = ModuleCache::open(&open_parent.join("cache"), &Engine::default());
        let _ = std::fs::remove_dir_all(&open_parent);
        assert!(
            matches!(refused, Err(CacheError::Unsafe { .. })),
            "{refused:?}"
        );
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
