//! A task as a client submits it (`POST /api/tasks`, and a schedule's task): the body read and
//! checked, every rule of the API with a message naming the field.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::RequestLimits;
use super::error::ApiError;
use crate::config::is_worker_name;
use crate::model::{CheckpointPolicy, MAX_PRIORITY, NewTask, OnHostLoss, RestartPolicy};

/// The seed's duration when a request names none.
const DEFAULT_DURATION_SECS: u32 = 3;

/// A task as a client submits it (`POST /api/tasks`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the body `parse_submission` reads, for the document"
)]
pub(super) struct TaskRequest {
    /// 1 to 256 bytes, not only white space.
    #[schema(example = "generate-report", min_length = 1, max_length = 256)]
    name: String,
    /// The worker to run; the `default` worker when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    worker: Option<String>,
    /// Seconds, at most the worker's `max_duration_secs`; 3 when absent.
    #[schema(example = 5)]
    duration: Option<u32>,
    /// Wall-clock limit in seconds from start; the duration plus the grace when absent.
    deadline: Option<u32>,
    /// `never` or `on-failure`; the worker's policy when absent.
    #[schema(value_type = Option<RestartName>)]
    restart: Option<String>,
    /// With `on-failure`: attempts in all, 2 to 10 (default 3).
    #[schema(minimum = 2, maximum = 10)]
    max_attempts: Option<u32>,
    /// `restart` (run it again from the start) or `fail`: what becomes of it if the host is
    /// lost while it runs; the worker's policy when absent.
    #[schema(value_type = Option<OnHostLoss>)]
    on_host_loss: Option<String>,
    /// Any JSON, handed to the worker as JSON text.
    payload: Option<serde_json::Value>,
    /// Start no sooner than this (RFC 3339, any offset): the task is accepted at once and
    /// waits `scheduled`, holding no place, until then. In the past, it is now. At most
    /// `--max-schedule-ahead` ahead. Not with `delay`.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-12-24T18:00:00Z")]
    run_at: Option<String>,
    /// Start no sooner than this many seconds from now (fractions allowed), as `run_at` does.
    #[schema(minimum = 0, example = 30)]
    delay: Option<f64>,
    /// 0 to 9, higher first: among tasks waiting for a place, the highest priority starts
    /// first, then the earliest accepted. The worker's `priority` (5 unless set) when absent.
    #[schema(minimum = 0, maximum = 9)]
    priority: Option<u8>,
    /// Any string of 1 to 256 bytes (a tenant's id, say): the key the worker's
    /// `per_key_running` and `rate` count by. Tasks over a limit wait; they are not refused.
    #[schema(min_length = 1, max_length = 256)]
    concurrency_key: Option<String>,
    /// `off`, `every step` or `every <duration>` (`every 30s`): when the task's state is
    /// checkpointed between steps, so that it resumes there if its host is lost. Its worker's
    /// policy (`off` unless set) when absent.
    #[schema(example = "every step")]
    checkpoint: Option<String>,
}

/// The restart policies a request may name, for the document.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(
    dead_code,
    reason = "names the values `RestartPolicy::parse` takes, for the document"
)]
pub(super) enum RestartName {
    Never,
    OnFailure,
}

/// Validates a `POST /api/tasks` body: every rule of the API, with a message naming the field.
pub fn parse_submission(body: &[u8], limits: &RequestLimits) -> Result<NewTask, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let name = match fields.remove("name") {
        None | Some(Value::Null) => return Err(bad("name is required".into())),
        Some(Value::String(name)) => name,
        Some(_) => return Err(bad("name must be a string".into())),
    };
    if name.trim().is_empty() {
        return Err(bad("name must not be empty".into()));
    }
    if name.contains('\0') {
        // No store can keep it as text (PostgreSQL refuses it), and no log shows it.
        return Err(bad("name must not contain NUL characters".into()));
    }
    if name.len() > limits.max_name_bytes {
        return Err(bad(format!(
            "name must be at most {} bytes",
            limits.max_name_bytes
        )));
    }
    let duration = seconds(
        "duration",
        fields.remove("duration"),
        limits.max_duration_secs,
    )?
    .unwrap_or(DEFAULT_DURATION_SECS);
    let deadline = seconds(
        "deadline",
        fields.remove("deadline"),
        limits.max_deadline_secs,
    )?;
    let restart = match fields.remove("restart") {
        None | Some(Value::Null) => None,
        Some(Value::String(policy)) => Some(policy),
        // Not a policy's name: refused as an unknown policy.
        Some(other) => Some(other.to_string()),
    };
    let max_attempts = match fields.remove("max_attempts") {
        None | Some(Value::Null) => None,
        // Not a whole number: refused as out of range.
        Some(value) => Some(value.as_u64().unwrap_or(0)),
    };
    let restart = RestartPolicy::parse(restart.as_deref(), max_attempts)
        .map_err(|error| bad(error.to_string()))?;
    let on_host_loss = match fields.remove("on_host_loss") {
        None | Some(Value::Null) => None,
        Some(Value::String(policy)) if OnHostLoss::parse(&policy).is_some() => {
            OnHostLoss::parse(&policy)
        }
        Some(_) => {
            return Err(bad("on_host_loss must be \"restart\" or \"fail\"".into()));
        }
    };
    let worker = match fields.remove("worker") {
        None | Some(Value::Null) => None,
        Some(Value::String(worker)) if is_worker_name(&worker) => Some(worker),
        Some(_) => return Err(bad(WORKER_TYPE.into())),
    };
    let payload = match fields.remove("payload") {
        None | Some(Value::Null) => None,
        Some(payload) => Some(payload.to_string()),
    };
    let run_at = run_at(
        fields.remove("run_at"),
        fields.remove("delay"),
        limits.max_schedule_ahead,
    )?;
    let priority = priority(fields.remove("priority"))?;
    let concurrency_key = match fields.remove("concurrency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key))
            if !key.is_empty() && key.len() <= MAX_KEY_BYTES && !key.contains('\0') =>
        {
            Some(key)
        }
        Some(_) => {
            return Err(bad(format!(
                "concurrency_key must be a string of 1 to {MAX_KEY_BYTES} bytes, without NUL"
            )));
        }
    };
    let checkpoint = match fields.remove("checkpoint") {
        None | Some(Value::Null) => None,
        Some(Value::String(policy)) => Some(CheckpointPolicy::parse(&policy).map_err(bad)?),
        Some(other) => Some(CheckpointPolicy::parse(&other.to_string()).map_err(bad)?),
    };
    Ok(NewTask {
        name,
        worker,
        duration,
        payload,
        deadline,
        restart,
        on_host_loss,
        run_at,
        priority,
        retry_of: None,
        schedule: None,
        concurrency_key,
        checkpoint,
    })
}

/// The longest `concurrency_key`, in bytes.
const MAX_KEY_BYTES: usize = 256;

/// When a submission may start, from its `run_at` (RFC 3339, with any offset) or its `delay`
/// (seconds, fractions allowed), at most `max_ahead` from now; none for now. A `run_at` in the
/// past, or a delay of 0, is now.
fn run_at(
    at: Option<Value>,
    delay: Option<Value>,
    max_ahead: Duration,
) -> Result<Option<SystemTime>, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let now = SystemTime::now();
    let ahead = match (at, delay) {
        (None | Some(Value::Null), None | Some(Value::Null)) => return Ok(None),
        (Some(at), None | Some(Value::Null)) => {
            let at = at
                .as_str()
                .and_then(crate::model::time::parse_rfc3339)
                .ok_or_else(|| {
                    bad("run_at must be an RFC 3339 date and time, e.g.                          \"2026-12-24T18:00:00Z\" or \"2026-12-24T19:00:00+01:00\""
                        .into())
                })?;
            match at.duration_since(now) {
                Ok(ahead) => ahead,
                Err(_) => return Ok(None),
            }
        }
        (None | Some(Value::Null), Some(delay)) => delay
            .as_f64()
            .filter(|secs| *secs >= 0.0)
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| bad("delay must be a non-negative number of seconds".into()))?,
        (Some(_), Some(_)) => {
            return Err(bad("give run_at or delay, not both".into()));
        }
    };
    if ahead > max_ahead {
        let secs = max_ahead.as_secs();
        let most = if secs.is_multiple_of(86_400) {
            format!("{} days", secs / 86_400)
        } else {
            format!("{secs} seconds")
        };
        return Err(bad(format!(
            "run_at and delay may be at most {most} ahead (--max-schedule-ahead)"
        )));
    }
    if ahead.is_zero() {
        return Ok(None);
    }
    Ok(Some(now + ahead))
}

/// A submission's `priority`: a whole number from 0 to 9, higher first.
fn priority(value: Option<Value>) -> Result<Option<u8>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| *p <= MAX_PRIORITY)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "priority must be an integer from 0 to {MAX_PRIORITY} (higher starts first)"
                ))
            }),
    }
}

/// The optional whole number of seconds in `field`, at most `max`.
fn seconds(field: &str, value: Option<Value>, max: u32) -> Result<Option<u32>, ApiError> {
    let secs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(_) => None,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} must be a non-negative integer number of seconds"
        ))
    })?;
    match u32::try_from(secs) {
        Ok(secs) if secs <= max => Ok(Some(secs)),
        _ => Err(ApiError::BadRequest(format!(
            "{field} must be at most {max} seconds"
        ))),
    }
}

const WORKER_TYPE: &str = "worker must be a worker's name (A-Z, a-z, 0-9, '_', '-')";

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_body_bytes: 1024,
            max_module_bytes: 1024,
            max_name_bytes: 8,
            max_duration_secs: 60,
            max_deadline_secs: 90,
            max_header_bytes: 1024,
            max_discard_bytes: 1024,
            read_timeout: std::time::Duration::from_secs(1),
            max_message_bytes: 1024,
            event_stream_idle: std::time::Duration::from_secs(60),
            max_wait_secs: 60,
            max_schedule_ahead: std::time::Duration::from_secs(86_400),
        }
    }

    fn parse(body: &str) -> Result<NewTask, String> {
        parse_submission(body.as_bytes(), &limits()).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_seed_body_and_defaults_the_duration() {
        assert_eq!(
            parse(r#"{"name":"report","duration":5}"#),
            Ok(NewTask {
                name: "report".into(),
                worker: None,
                duration: 5,
                ..NewTask::default()
            })
        );
        assert_eq!(parse(r#"{"name":"report"}"#).map(|s| s.duration), Ok(3));
        assert_eq!(
            parse(r#"{"name":"r","payload":{"a":[1]}}"#).map(|s| s.payload),
            Ok(Some(r#"{"a":[1]}"#.into()))
        );
    }

    #[test]
    fn rejects_each_bad_field_with_its_reason() {
        for (body, reason) in [
            ("{", "invalid JSON"),
            ("[]", "JSON object"),
            ("{}", "name is required"),
            (r#"{"name":7}"#, "name must be a string"),
            (r#"{"name":"  "}"#, "must not be empty"),
            (r#"{"name":"a\u0000b"}"#, "must not contain NUL"),
            (r#"{"name":"much too long"}"#, "at most 8 bytes"),
            (r#"{"name":"a","duration":-1}"#, "non-negative integer"),
            (r#"{"name":"a","duration":1.5}"#, "non-negative integer"),
            (r#"{"name":"a","duration":"5"}"#, "non-negative integer"),
            (r#"{"name":"a","duration":61}"#, "at most 60 seconds"),
            (
                r#"{"name":"a","deadline":-2}"#,
                "deadline must be a non-negative",
            ),
            (
                r#"{"name":"a","deadline":91}"#,
                "deadline must be at most 90",
            ),
        ] {
            let error = parse(body).expect_err(body);
            assert!(error.contains(reason), "{body}: {error}");
        }
    }
}
