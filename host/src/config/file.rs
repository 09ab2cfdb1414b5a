//! The registry file (`--config http-spawn.toml`): `[server]` settings, `[workers.<name>]` and
//! `[schedules.<name>]` tables, read strictly, with every error naming its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::StoreLocation;
use super::{ConfigError, is_worker_name};
use crate::actor::ActorScope;
use crate::model::{CheckpointPolicy, OnHostLoss, RestartPolicy, parse_memory_size};

/// The registry file: `[server]` and `[workers.<name>]` tables. Unknown keys are errors, so a
/// typo is reported, with its line, instead of silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegistryFile {
    #[serde(default)]
    pub(super) server: ServerFile,
    #[serde(default)]
    pub(super) workers: BTreeMap<WorkerName, WorkerFile>,
    /// `[schedules.<name>]`: checked when the host starts, as `POST /api/schedules` checks
    /// its body.
    #[serde(default)]
    pub(super) schedules: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub(super) listen: Option<SocketAddr>,
    pub(super) worker_threads: Option<usize>,
    pub(super) http_threads: Option<usize>,
    pub(super) capacity: Option<Capacity>,
    pub(super) max_queue: Option<usize>,
    pub(super) max_history: Option<usize>,
    pub(super) max_connections: Option<MaxConnections>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) store: Option<StoreName>,
    pub(super) watch_interval_ms: Option<u64>,
}

/// A `[workers.<name>]` table.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawWorkerFile")]
pub(super) struct WorkerFile {
    pub(super) module: PathBuf,
    pub(super) fuel_per_step: Option<u64>,
    pub(super) max_memory: Option<MemorySize>,
    pub(super) max_duration_secs: Option<u32>,
    pub(super) restart: RestartPolicy,
    pub(super) on_host_loss: OnHostLoss,
    pub(super) actor_scope: ActorScope,
    pub(super) priority: u8,
    pub(super) max_running: Option<u32>,
    pub(super) per_key_running: Option<u32>,
    pub(super) rate: Option<super::Rate>,
    pub(super) checkpoint: CheckpointPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkerFile {
    module: PathBuf,
    fuel_per_step: Option<u64>,
    max_memory: Option<MemorySize>,
    max_duration_secs: Option<u32>,
    restart: Option<String>,
    on_host_loss: Option<String>,
    max_attempts: Option<u64>,
    actor_scope: Option<String>,
    priority: Option<u8>,
    max_running: Option<u32>,
    per_key_running: Option<u32>,
    rate: Option<String>,
    checkpoint: Option<String>,
}

impl TryFrom<RawWorkerFile> for WorkerFile {
    type Error = String;

    fn try_from(raw: RawWorkerFile) -> Result<Self, String> {
        let restart = RestartPolicy::parse(raw.restart.as_deref(), raw.max_attempts)
            .map_err(|error| error.to_string())?
            .unwrap_or(RestartPolicy::Never);
        Ok(Self {
            module: raw.module,
            fuel_per_step: raw.fuel_per_step,
            max_memory: raw.max_memory,
            max_duration_secs: raw.max_duration_secs,
            restart,
            on_host_loss: match raw.on_host_loss.as_deref() {
                None => OnHostLoss::Restart,
                Some(name) => {
                    OnHostLoss::parse(name).ok_or("on_host_loss must be \"restart\" or \"fail\"")?
                }
            },
            actor_scope: match raw.actor_scope.as_deref() {
                None => ActorScope::Any,
                Some(name) => ActorScope::parse(name)
                    .ok_or("actor_scope must be \"any\", \"tree\" or \"descendants\"")?,
            },
            priority: match raw.priority {
                None => crate::model::DEFAULT_PRIORITY,
                Some(p) if p <= crate::model::MAX_PRIORITY => p,
                Some(_) => return Err("priority must be from 0 to 9".into()),
            },
            max_running: match raw.max_running {
                Some(0) => return Err("max_running must be at least 1".into()),
                n => n,
            },
            per_key_running: match raw.per_key_running {
                Some(0) => return Err("per_key_running must be at least 1".into()),
                n => n,
            },
            rate: raw.rate.as_deref().map(super::Rate::parse).transpose()?,
            checkpoint: raw
                .checkpoint
                .as_deref()
                .map(CheckpointPolicy::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// A worker's name: what requests and URLs use, so it is kept to `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct WorkerName(pub(super) String);

impl<'de> Deserialize<'de> for WorkerName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if is_worker_name(&name) {
            Ok(Self(name))
        } else {
            Err(serde::de::Error::custom(format!(
                "worker name {name:?} must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
            )))
        }
    }
}

/// A memory size in the file: a number of bytes, or a string such as `"16MiB"`.
#[derive(Debug)]
pub(super) struct MemorySize(pub(super) u64);

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => bytes.to_string(),
            Raw::Text(text) => text,
        };
        parse_memory_size(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// A capacity in the file: at least 1.
#[derive(Debug)]
pub(super) struct Capacity(u32);

impl From<Capacity> for u32 {
    fn from(capacity: Capacity) -> Self {
        capacity.0
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            0 => Err(serde::de::Error::custom("capacity must be at least 1")),
            n => Ok(Self(n)),
        }
    }
}

/// `max_connections`: at least one.
#[derive(Debug, Clone, Copy)]
pub(super) struct MaxConnections(u32);

impl From<MaxConnections> for usize {
    fn from(max: MaxConnections) -> Self {
        max.0 as usize
    }
}

impl<'de> Deserialize<'de> for MaxConnections {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u32::deserialize(deserializer)? {
            0 => Err(serde::de::Error::custom(
                "max_connections must be at least 1",
            )),
            n => Ok(Self(n)),
        }
    }
}

impl RegistryFile {
    pub(super) fn read(path: &Path) -> Result<(PathBuf, Self), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: Self = toml::from_str(&text).map_err(|error| ConfigError::File {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        Ok((path.to_owned(), file))
    }
}

/// `store` in the file: `sqlite:PATH` (relative to the file) or `memory`.
#[derive(Debug)]
pub(super) struct StoreName(pub(super) StoreLocation);

impl<'de> Deserialize<'de> for StoreName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        StoreLocation::parse(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}
