//! The worker registry: named workers, each with the module version new tasks get, the one
//! before it, and the limits its tasks run under.
//!
//! A new version (an upload, or a change to the module file on disk) goes through the whole of
//! [`Sandbox::load`] before it is published; until then, and if it fails, the old version keeps
//! serving. Publishing swaps one pointer: tasks hold the version they were spawned with for
//! their whole life, so a swap never touches a task already accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{DEFAULT_WORKER, WorkerConfig};
use crate::metrics::Metrics;
use crate::model::time;
use crate::runtime::{Digest, LoadError, Module, Origin, Sandbox, WorkerLimits};
use crate::store::{Change, Store, StoreError, StoredVersion, WorkerVersions};

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// Read from the worker's module file, at start or when the file changed.
    File(PathBuf),
    /// Uploaded with `PUT /api/workers/{name}`.
    Upload,
}

/// One module version of a worker, ready to run tasks.
#[derive(Debug)]
pub struct Version {
    pub module: Module,
    /// The start of the module's SHA-256, as records show it.
    pub id: Arc<str>,
    pub source: VersionSource,
    pub installed_at: SystemTime,
}

/// A named worker.
#[derive(Debug)]
pub struct Worker {
    pub name: Arc<str>,
    pub settings: WorkerConfig,
    state: Mutex<WorkerState>,
}

#[derive(Debug)]
struct WorkerState {
    current: Arc<Version>,
    previous: Option<Arc<Version>>,
    last_error: Option<Failure>,
    /// The module file as last seen on disk and as last loaded, to notice changes.
    file: FileStamps,
}

#[derive(Debug, Default)]
struct FileStamps {
    loaded: Option<FileStamp>,
    pending: Option<FileStamp>,
    /// The SHA-256 of the file as last loaded, kept in the store: a file changed while the
    /// host was down is noticed at start.
    sha256: String,
}

/// What changes when a file is rewritten or replaced: its size and times, and, where there
/// are such things, its inode and change time, which `cp -p`, `rsync -t` or `mv` of a file with
/// an old modification time still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
    inode: (u64, u64),
    changed: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let (inode, changed) = {
            use std::os::unix::fs::MetadataExt as _;
            ((meta.dev(), meta.ino()), (meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let (inode, changed) = ((0, 0), (0, 0));
        Some(Self {
            modified: meta.modified().ok()?,
            len: meta.len(),
            inode,
            changed,
        })
    }
}

/// Why a version kept in the store could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The store could not be read now; it may be later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The worker is unknown, or its bytes are missing, damaged or refused.
    #[error("{0}")]
    Load(String),
}

/// The last new version that was refused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Failure {
    #[serde(serialize_with = "time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
    pub source: &'static str,
    pub error: String,
}

impl Version {
    /// The name of the worker this is a version of.
    pub fn worker(&self) -> &Arc<str> {
        self.module.worker()
    }
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, WorkerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The version new tasks get.
    pub fn current(&self) -> Arc<Version> {
        Arc::clone(&self.lock().current)
    }

    /// What `GET /api/workers` shows of this worker.
    pub fn info(&self) -> WorkerInfo {
        let state = self.lock();
        WorkerInfo {
            name: Arc::clone(&self.name),
            default: &*self.name == DEFAULT_WORKER,
            module: self.settings.module.clone(),
            fuel_per_step: self.settings.fuel_per_step,
            max_memory_bytes: self.settings.max_memory,
            max_duration_secs: self.settings.max_duration_secs,
            restart: self.settings.restart.as_str(),
            max_attempts: self.settings.restart.max_attempts(),
            actor_scope: self.settings.actor_scope.as_str(),
            checkpoint: self.settings.checkpoint.to_string(),
            checkpointable: state.current.module.checkpointable(),
            current: VersionInfo::of(&state.current),
            previous: state.previous.as_deref().map(VersionInfo::of),
            last_error: state.last_error.clone(),
            paused: false,
            held: 0,
            max_running: self.settings.max_running,
            per_key_running: self.settings.per_key_running,
            rate: self.settings.rate.map(|rate| rate.text()),
            limits_from: "file",
            limited: None,
        }
    }

    /// Publishes `version`; the current one becomes the previous.
    fn publish(&self, version: Version) {
        let mut state = self.lock();
        let version = Arc::new(version);
        let old = std::mem::replace(&mut state.current, version);
        state.previous = Some(old);
        state.last_error = None;
    }

    fn refuse(&self, source: &VersionSource, error: &LoadError) {
        self.lock().last_error = Some(Failure {
            at: SystemTime::now(),
            source: source_name(source),
            error: error.to_string(),
        });
    }
}

fn source_name(source: &VersionSource) -> &'static str {
    match source {
        VersionSource::File(_) => "file",
        VersionSource::Upload => "upload",
    }
}

/// A worker as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    #[schema(value_type = String)]
    pub name: Arc<str>,
    /// Whether tasks that name no worker get this one.
    pub default: bool,
    /// The module file it loads at start and watches.
    #[schema(value_type = String)]
    pub module: PathBuf,
    pub fuel_per_step: u64,
    pub max_memory_bytes: u64,
    pub max_duration_secs: u32,
    /// The restart policy of its tasks when a request names none.
    pub restart: &'static str,
    pub max_attempts: u32,
    /// Which tasks its tasks' actor calls reach: `any`, `tree` or `descendants`.
    pub actor_scope: &'static str,
    /// When its tasks are checkpointed when a request names nothing: `off`, `every step` or
    /// `every <duration>`.
    pub checkpoint: String,
    /// Whether its current version can be checkpointed: it exports the `checkpoint`
    /// interface of `wit/worker.wit` (the SDK's workers do).
    pub checkpointable: bool,
    pub current: VersionInfo,
    pub previous: Option<VersionInfo>,
    /// The last new version refused, until one is accepted.
    pub last_error: Option<Failure>,
    /// Paused (`POST /api/workers/{name}/pause`): its new tasks wait, not started.
    pub paused: bool,
    /// While paused: its tasks waiting on this host for it to be resumed.
    pub held: usize,
    /// At most this many of its tasks run at once (in a cluster, on all hosts together).
    pub max_running: Option<u32>,
    /// At most this many of its tasks of one `concurrency_key` run at once (in a cluster, on
    /// all hosts together).
    pub per_key_running: Option<u32>,
    /// At most this many starts per period (per key for tasks with one), e.g. `100/1s`.
    pub rate: Option<String>,
    /// Where the three limits come from: `file` (the registry file) or `api` (`PUT
    /// /api/workers/{name}/limits`).
    pub limits_from: &'static str,
    /// With limits: its tasks they count as running, and those they hold from starting (in a
    /// cluster, on all hosts: those hosts hold, and those waiting in the shared queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<Limited>,
}

/// What a worker's limits count.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Limited {
    pub running: u32,
    pub waiting: usize,
}

/// A module version as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// The start of its SHA-256: what task records show.
    #[schema(value_type = String)]
    pub version: Arc<str>,
    /// Its full SHA-256.
    pub sha256: String,
    pub size_bytes: usize,
    /// `file` or `upload`.
    pub source: &'static str,
    /// `compiled`, or `cache` when its compiled code came from the module cache.
    pub origin: Origin,
    #[serde(serialize_with = "time::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub installed_at: SystemTime,
}

impl VersionInfo {
    fn of(version: &Version) -> Self {
        Self {
            version: Arc::clone(&version.id),
            sha256: version.module.digest().hex(),
            size_bytes: version.module.size(),
            source: source_name(&version.source),
            origin: version.module.origin(),
            installed_at: version.installed_at,
        }
    }
}

/// Why a worker could not be started at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "no {DEFAULT_WORKER:?} worker is configured (build the configuration with Config::from_args)"
    )]
    NoDefault,
    #[error("worker {worker:?}: cannot read its module {path} ({source}){hint}")]
    Read {
        worker: String,
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("worker {worker:?}: the module {path} was refused: {source}")]
    Load {
        worker: String,
        path: PathBuf,
        source: LoadError,
    },
    #[error("worker {worker:?}: its versions cannot be kept in the store: {source}")]
    Store { worker: String, source: StoreError },
}

/// A request named a worker the registry does not have.
#[derive(Debug, thiserror::Error)]
#[error("no worker named {name:?}; the workers are: {known}")]
pub struct UnknownWorker {
    pub name: String,
    pub known: String,
}

/// Why a new version was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Unknown(#[from] UnknownWorker),
    #[error(transparent)]
    Refused(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Unknown(#[from] UnknownWorker),
    #[error("worker {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of an install.
#[derive(Debug)]
pub struct Installed {
    pub worker: WorkerInfo,
    /// False when the module is the version already current: nothing changed.
    pub changed: bool,
}

/// The named workers.
#[derive(Debug)]
pub struct Registry {
    sandbox: Arc<Sandbox>,
    metrics: Arc<Metrics>,
    /// Where versions are kept across restarts.
    store: Arc<dyn Store>,
    workers: BTreeMap<Arc<str>, Arc<Worker>>,
    /// One load at a time: loads compile on a blocking thread, and the pool keeps a single
    /// spare instance for smoke runs.
    installing: Mutex<()>,
}

impl Registry {
    /// Loads every configured worker's module. Fails, naming the worker, if any cannot serve.
    pub fn start(
        sandbox: Arc<Sandbox>,
        configs: &[WorkerConfig],
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let mut registry = Self {
            sandbox,
            metrics,
            store,
            workers: BTreeMap::new(),
            installing: Mutex::new(()),
        };
        for config in configs {
            let worker = registry.start_worker(config)?;
            registry
                .workers
                .insert(Arc::clone(&worker.name), Arc::new(worker));
        }
        if !registry.workers.contains_key(DEFAULT_WORKER) {
            return Err(StartError::NoDefault);
        }
        for worker in registry.workers.values() {
            registry.save(worker).map_err(|source| StartError::Store {
                worker: worker.name.to_string(),
                source,
            })?;
        }
        Ok(registry)
    }

    /// A worker at start: from its module file, unless the store says otherwise. While the
    /// file is the one last loaded, the store's versions stand (an upload, a rollback); a file
    /// changed while the host was down becomes current, the stored current its previous.
    fn start_worker(&self, config: &WorkerConfig) -> Result<Worker, StartError> {
        let stamp = FileStamp::of(&config.module);
        let bytes = std::fs::read(&config.module).map_err(|source| StartError::Read {
            worker: config.name.clone(),
            path: config.module.clone(),
            source,
            hint: if config.name == DEFAULT_WORKER {
                "; `make build-guest` builds the default one"
            } else {
                ""
            },
        })?;
        let name: Arc<str> = config.name.as_str().into();
        let file_sha256 = Digest::of(&bytes).hex();
        let stored = self
            .store
            .worker(&name)
            .map_err(|source| StartError::Store {
                worker: config.name.clone(),
                source,
            })?;
        let from_store = |version: &StoredVersion| self.stored_version(&name, config, version);
        let (current, previous) = match &stored {
            Some(stored) if stored.file_sha256 == file_sha256 => {
                match from_store(&stored.current) {
                    Some(current) => (current, stored.previous.as_ref().and_then(from_store)),
                    None => (self.file_version(&name, config, &bytes)?, None),
                }
            }
            Some(stored) => (
                self.file_version(&name, config, &bytes)?,
                from_store(&stored.current),
            ),
            None => (self.file_version(&name, config, &bytes)?, None),
        };
        tracing::info!(
            worker = %config.name,
            version = %current.id,
            origin = ?current.module.origin(),
            source = source_name(&current.source),
            previous = previous.as_ref().map(|previous| previous.id.to_string()),
            "worker loaded"
        );
        Ok(Worker {
            name,
            settings: config.clone(),
            state: Mutex::new(WorkerState {
                current: Arc::new(current),
                previous: previous.map(Arc::new),
                last_error: None,
                file: FileStamps {
                    loaded: stamp,
                    pending: None,
                    sha256: file_sha256,
                },
            }),
        })
    }

    fn file_version(
        &self,
        name: &Arc<str>,
        config: &WorkerConfig,
        bytes: &[u8],
    ) -> Result<Version, StartError> {
        let module = self
            .sandbox
            .load(name, bytes, limits_of(config))
            .map_err(|source| StartError::Load {
                worker: config.name.clone(),
                path: config.module.clone(),
                source,
            })?;
        self.metrics
            .module_loaded(name, origin_name(module.origin()));
        self.store_module(&module, bytes)
            .map_err(|source| StartError::Store {
                worker: config.name.clone(),
                source,
            })?;
        Ok(version(module, VersionSource::File(config.module.clone())))
    }

    /// A version the store keeps, loaded again; `None`, with a warning, if it cannot be.
    fn stored_version(
        &self,
        name: &Arc<str>,
        config: &WorkerConfig,
        stored: &StoredVersion,
    ) -> Option<Version> {
        let module = match self.load_stored(name, config, &stored.sha256) {
            Ok(module) => module,
            Err(error) => {
                tracing::warn!(worker = %name, sha256 = %stored.sha256, %error,
                    "a stored worker version cannot be loaded; it is dropped");
                return None;
            }
        };
        let source = if stored.source == "upload" {
            VersionSource::Upload
        } else {
            VersionSource::File(config.module.clone())
        };
        Some(Version {
            id: module.digest().short().into(),
            module,
            source,
            installed_at: stored.installed_at,
        })
    }

    fn load_stored(
        &self,
        name: &Arc<str>,
        config: &WorkerConfig,
        sha256: &str,
    ) -> Result<Module, VersionError> {
        let bytes = self
            .store
            .module(sha256)?
            .ok_or_else(|| VersionError::Load("the store does not keep its bytes".to_owned()))?;
        // The bytes are kept by their SHA-256: bytes that do not hash to it were damaged (or
        // written by something else), and are never run.
        if Digest::of(&bytes).hex() != sha256 {
            return Err(VersionError::Load(
                "the stored bytes do not match their SHA-256".to_owned(),
            ));
        }
        let module = self
            .sandbox
            .load(name, &bytes, limits_of(config))
            .map_err(|error| VersionError::Load(error.to_string()))?;
        self.metrics
            .module_loaded(name, origin_name(module.origin()));
        Ok(module)
    }

    /// The version of worker `worker` whose module's SHA-256 is `sha256`, for a task accepted
    /// before the host was lost: the current or previous one, or one loaded from the store.
    pub fn version_of(&self, worker: &str, sha256: &str) -> Result<Arc<Version>, VersionError> {
        let worker = self
            .get(Some(worker))
            .map_err(|error| VersionError::Load(error.to_string()))?;
        {
            let state = worker.lock();
            for version in [Some(&state.current), state.previous.as_ref()]
                .into_iter()
                .flatten()
            {
                if version.module.digest().hex() == sha256 {
                    return Ok(Arc::clone(version));
                }
            }
        }
        let module = self.load_stored(&worker.name, &worker.settings, sha256)?;
        Ok(Arc::new(version(module, VersionSource::Upload)))
    }

    fn store_module(&self, module: &Module, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.wait(vec![Change::Module {
            sha256: module.digest().hex(),
            bytes: bytes.to_vec(),
        }])
    }

    /// Writes `worker`'s versions to the store, and waits for them to be there.
    fn save(&self, worker: &Worker) -> Result<(), StoreError> {
        let (current, previous, file_sha256) = {
            let state = worker.lock();
            (
                Arc::clone(&state.current),
                state.previous.clone(),
                state.file.sha256.clone(),
            )
        };
        self.save_versions(&worker.name, &current, previous.as_deref(), &file_sha256)
    }

    /// Writes a worker's versions to the store, and waits for them to be there.
    fn save_versions(
        &self,
        name: &str,
        current: &Version,
        previous: Option<&Version>,
        file_sha256: &str,
    ) -> Result<(), StoreError> {
        let versions = WorkerVersions {
            current: stored(current),
            previous: previous.map(stored),
            file_sha256: file_sha256.to_owned(),
        };
        self.store.wait(vec![Change::Worker {
            name: name.to_owned(),
            versions,
        }])
    }

    /// The worker called `name`, or the default one; or an error naming the workers there are.
    pub fn get(&self, name: Option<&str>) -> Result<&Arc<Worker>, UnknownWorker> {
        let name = name.unwrap_or(DEFAULT_WORKER);
        self.workers.get(name).ok_or_else(|| UnknownWorker {
            name: name.to_owned(),
            known: self.names(),
        })
    }

    /// The workers' names, for logs and error messages.
    pub fn names(&self) -> String {
        self.workers
            .keys()
            .map(|name| name.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every worker, by name.
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.workers.values().map(|worker| worker.info()).collect()
    }

    /// Worker `name`, with the right to change its versions: one change at a time, so that a
    /// rollback cannot be overtaken by an install that was compiling meanwhile.
    fn to_change(&self, name: &str) -> Result<(&Arc<Worker>, MutexGuard<'_, ()>), UnknownWorker> {
        let worker = self.get(Some(name))?;
        let turn = self
            .installing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok((worker, turn))
    }

    /// Checks `bytes` as a new version of worker `name` and, if it passes, makes it the version
    /// new tasks get. Slow (it may compile): call it off the async runtime.
    pub fn install(
        &self,
        name: &str,
        bytes: &[u8],
        source: VersionSource,
    ) -> Result<Installed, InstallError> {
        let (worker, _one_at_a_time) = self.to_change(name)?;
        let digest = Digest::of(bytes);
        let source_label = source_name(&source);
        if *worker.current().module.digest() == digest {
            self.metrics
                .install(&worker.name, source_label, "unchanged");
            return Ok(Installed {
                worker: worker.info(),
                changed: false,
            });
        }
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sandbox
                .load(&worker.name, bytes, limits_of(&worker.settings))
        }))
        .unwrap_or_else(|_| {
            Err(LoadError::SmokeFailed(
                "the host failed while checking the module (a bug; see the host's log)".into(),
            ))
        });
        let module = match loaded {
            Ok(module) => module,
            Err(error) => {
                tracing::warn!(worker = %name, source = source_name(&source), %error,
                    "new worker version refused; the current one keeps serving");
                worker.refuse(&source, &error);
                self.metrics.install(&worker.name, source_label, "refused");
                return Err(error.into());
            }
        };
        self.metrics
            .module_loaded(&worker.name, origin_name(module.origin()));
        self.store_module(&module, bytes)?;
        self.metrics
            .install(&worker.name, source_label, "installed");
        let file_sha256 = match &source {
            VersionSource::File(_) => digest.hex(),
            VersionSource::Upload => worker.lock().file.sha256.clone(),
        };
        let version = version(module, source);
        // In the store before it serves: a version that serves survives a restart.
        let current = worker.current();
        self.save_versions(&worker.name, &version, Some(&current), &file_sha256)?;
        tracing::info!(
            worker = %name,
            version = %version.id,
            source = source_name(&version.source),
            origin = ?version.module.origin(),
            "worker version installed"
        );
        worker.lock().file.sha256 = file_sha256;
        worker.publish(version);
        Ok(Installed {
            worker: worker.info(),
            changed: true,
        })
    }

    /// Makes the previous version current again; the current one becomes the previous, so a
    /// second rollback undoes the first.
    pub fn rollback(&self, name: &str) -> Result<WorkerInfo, RollbackError> {
        let (worker, _one_at_a_time) = self.to_change(name)?;
        let (current, previous, file_sha256) = {
            let state = worker.lock();
            let previous = state
                .previous
                .clone()
                .ok_or_else(|| RollbackError::NoPrevious(name.to_owned()))?;
            (
                Arc::clone(&state.current),
                previous,
                state.file.sha256.clone(),
            )
        };
        // In the store before it serves, as an install.
        self.save_versions(&worker.name, &previous, Some(&current), &file_sha256)?;
        {
            let mut state = worker.lock();
            state.current = previous;
            state.previous = Some(current);
            tracing::info!(worker = %name, version = %state.current.id, "worker rolled back");
        }
        Ok(worker.info())
    }

    /// Makes current the versions the store says are (another host of a cluster installed or
    /// rolled back a worker), loading any this host lacks from the store's bytes, checked by
    /// their SHA-256 and compiled (or taken from the module cache). Never writes the store.
    pub fn follow_store(&self) {
        for (name, worker) in &self.workers {
            let stored = match self.store.worker(name) {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(worker = %name, %error, "reading the stored versions failed");
                    continue;
                }
            };
            let same = |version: Option<&Arc<Version>>, stored: Option<&StoredVersion>| {
                version.map(|version| version.module.digest().hex())
                    == stored.map(|stored| stored.sha256.clone())
            };
            {
                let state = worker.lock();
                if same(Some(&state.current), Some(&stored.current))
                    && same(state.previous.as_ref(), stored.previous.as_ref())
                {
                    continue;
                }
            }
            let _one_at_a_time = self
                .installing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let known = |sha256: &str| {
                let state = worker.lock();
                [Some(&state.current), state.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|version| version.module.digest().hex() == sha256)
                    .cloned()
            };
            let load = |stored: &StoredVersion| {
                known(&stored.sha256).or_else(|| {
                    self.stored_version(name, &worker.settings, stored)
                        .map(Arc::new)
                })
            };
            let Some(current) = load(&stored.current) else {
                continue;
            };
            let previous = stored.previous.as_ref().and_then(load);
            let mut state = worker.lock();
            tracing::info!(worker = %name, version = %current.id,
                previous = previous.as_ref().map(|previous| previous.id.to_string()),
                "worker version changed on another host of the cluster: new tasks get it here too");
            state.current = current;
            state.previous = previous;
            state.file.sha256 = stored.file_sha256;
        }
    }

    /// Looks at every worker's module file once, and installs those that changed and have
    /// settled (the same size and time for two looks in a row, so a file being written is
    /// not read half-way).
    pub fn poll_files(&self) {
        for (name, worker) in &self.workers {
            let path = &worker.settings.module;
            let stamp = FileStamp::of(path);
            let settled = {
                let mut state = worker.lock();
                if stamp.is_none() || stamp == state.file.loaded {
                    state.file.pending = None;
                    continue;
                }
                if stamp != state.file.pending {
                    state.file.pending = stamp;
                    continue;
                }
                state.file.loaded = stamp;
                state.file.pending = None;
                true
            };
            if !settled {
                continue;
            }
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(worker = %name, path = %path.display(), %error,
                        "cannot read the changed module file");
                    continue;
                }
            };
            tracing::info!(worker = %name, path = %path.display(), "module file changed");
            // The outcome is logged and shown in the worker's `last_error`.
            let _ = self.install(name, &bytes, VersionSource::File(path.clone()));
        }
    }

    /// Starts a thread that calls [`Registry::poll_files`] every `interval` while the registry
    /// lives.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> std::io::Result<()> {
        let registry: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("module-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    match registry.upgrade() {
                        Some(registry) => registry.poll_files(),
                        None => return,
                    }
                }
            })
            .map(drop)
    }
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Compiled => "compiled",
        Origin::Cache => "cache",
    }
}

fn limits_of(config: &WorkerConfig) -> WorkerLimits {
    WorkerLimits {
        fuel_per_step: config.fuel_per_step,
        max_memory_bytes: usize::try_from(config.max_memory).unwrap_or(usize::MAX),
    }
}

fn version(module: Module, source: VersionSource) -> Version {
    Version {
        id: module.digest().short().into(),
        module,
        source,
        installed_at: SystemTime::now(),
    }
}

fn stored(version: &Version) -> StoredVersion {
    StoredVersion {
        sha256: version.module.digest().hex(),
        source: source_name(&version.source).to_owned(),
        installed_at: version.installed_at,
    }
}
