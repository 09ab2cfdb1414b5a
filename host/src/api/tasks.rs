//! `/api/tasks`: submit (the body is read by `submission`), list, read, kill, and read a
//! task's logs.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::actors::task_pid;
use super::error::{AnyRoute, ApiError, ErrorBody, RETRY_AFTER_SECS};
use super::submission::{TaskRequest, parse_submission};
use super::wait;
use crate::host::{KillError, SpawnError};
use crate::model::{LogLine, Pid, Status, TaskRecord};
use crate::runtime::Digest;
use crate::store::{Cursor, IdempotencyKey, ListQuery, Page, StoreError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Spawned {
    #[schema(value_type = String)]
    pub(super) pid: Pid,
    pub(super) name: String,
    pub(super) status: Status,
    pub(super) message: String,
}

/// How long a submission waits at most for a scheduler that starts tasks late before it is
/// refused (and ten times `--max-start-lag`, if that is less), and how often it looks.
const LATE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
const LATE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Accepts a task and answers at once; the task runs in its own instance.
///
/// With `Prefer: wait=N` (RFC 7240), the answer waits up to N seconds (at most
/// `--max-wait-secs`) for the task to end: `200` with how it ended if it does, else the usual
/// `202`; both with `Preference-Applied`. Without the header nothing waits.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = TaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1,
        max_length = 255, pattern = "^[!-~]+$",
        description = "1 to 255 bytes of visible ASCII: a repeat with the same body answers the \
            first pid and starts nothing"),
        ("Prefer" = Option<String>, Header, nullable = false,
        description = "`wait=N`: wait up to N seconds (at most --max-wait-secs) for the task's \
            end and answer it with 200; other preferences are ignored")),
    responses(
        (status = 200, description = "With `Prefer: wait=N`: the task ended within the wait",
            body = super::wait::TaskResult,
            headers(("Location" = String, description = "The task's path, `/api/tasks/{pid}`"),
                ("Preference-Applied" = String, description = "`wait=N`, the wait given"))),
        (status = 202, description = "Accepted; `Location` names the task", body = Spawned,
            headers(("Location" = String, description = "The task's path, `/api/tasks/{pid}`"),
                ("Preference-Applied" = String,
                    description = "With `Prefer: wait=N`: `wait=N`, the wait given")),
            links(
                ("GetTask" = (operation_id = "get_task",
                    parameters(("pid" = "$response.body#/pid")))),
                ("KillTask" = (operation_id = "kill_task",
                    parameters(("pid" = "$response.body#/pid")))),
                ("GetLogs" = (operation_id = "get_logs",
                    parameters(("pid" = "$response.body#/pid")))),
                ("TaskEvents" = (operation_id = "task_events",
                    parameters(("pid" = "$response.body#/pid")))))),
        (status = 400, description = "A bad field, or an unknown worker", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is in progress", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with another body", body = ErrorBody),
        (status = 429, description = "Every place and the queue are full, or the host starts tasks later than --max-start-lag", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
        AnyRoute))]
pub(super) async fn spawn_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, state.limits.max_body_bytes)?;
    let key = idempotency_key(&headers, &body)?;
    let task = parse_submission(&body, &state.limits)?;
    let (name, duration, run_at) = (task.name.clone(), task.duration, task.run_at);
    // While the scheduler starts tasks late, the request waits (holding no thread) for it to
    // catch up, up to a bound, before it is refused: a client that sends the next request as
    // soon as this one is answered is slowed down instead of answered at once, so that its
    // refusals do not take the CPU the scheduler needs to catch up.
    let waited = std::time::Instant::now();
    let patience = LATE_WAIT.min(state.host.max_start_lag() * 10);
    while run_at.is_none() && state.host.late().is_some() && waited.elapsed() < patience {
        tokio::time::sleep(LATE_POLL).await;
    }
    // Only a request with a key may have to be asked again (below): only it is copied.
    let again = key.as_ref().map(|key| (task.clone(), key.clone()));
    let spawned = match state.host.spawn_async(task, key).await {
        Ok(accepting) => match (accepting.recorded().await, again) {
            // Another host of the cluster accepted a request with this key at the same moment:
            // this one is its repeat, answered as any repeat is (its pid, or 422).
            (Err(SpawnError::Store(StoreError::KeyTaken)), Some((task, key))) => {
                match state.host.spawn_async(task, Some(key)).await {
                    Ok(accepting) => accepting.recorded().await,
                    Err(error) => Err(error),
                }
            }
            (answer, _) => answer,
        },
        Err(error) => Err(error),
    };
    let pid = spawned.map_err(spawn_error)?;
    let wait = wait::preferred_wait(&headers, state.limits.max_wait_secs);
    if let Some(wait) = wait
        && let Some(ended) = wait::waited(&state, pid, wait).await
    {
        return Ok(ended);
    }
    let body = match run_at {
        None => Spawned {
            pid,
            message: format!("Process {pid} will run for {duration} seconds"),
            name,
            status: Status::Spawned,
        },
        Some(at) => Spawned {
            pid,
            message: format!(
                "Process {pid} will run for {duration} seconds from {}",
                crate::model::time::format(at)
            ),
            name,
            status: Status::Scheduled,
        },
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, wait::location(pid));
    if let Some(wait) = wait {
        headers.insert(
            wait::PREFERENCE_APPLIED.clone(),
            wait::preference_applied(wait),
        );
    }
    Ok(response)
}

/// The answer to a submission the host refused.
pub(super) fn spawn_error(error: SpawnError) -> ApiError {
    match error {
        SpawnError::Full { .. }
        | SpawnError::Behind { .. }
        | SpawnError::TooManyScheduled { .. } => ApiError::Full {
            message: error.to_string(),
            retry_after: RETRY_AFTER_SECS,
        },
        SpawnError::ShuttingDown => ApiError::Unavailable {
            message: error.to_string(),
            retry_after: RETRY_AFTER_SECS,
        },
        SpawnError::UnknownWorker(_) | SpawnError::TooLong { .. } => {
            ApiError::BadRequest(error.to_string())
        }
        SpawnError::Store(error) => error.into(),
        SpawnError::KeyReused(_) => ApiError::Unprocessable(error.to_string()),
        SpawnError::KeyInFlight => ApiError::Conflict(error.to_string()),
    }
}

/// A body sent as JSON (`415` otherwise) and read whole within `limit` bytes (`413`).
pub(super) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
        _ => ApiError::BadRequest(rejection.body_text()),
    })
}

/// The longest `Idempotency-Key` accepted, in bytes.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The request's `Idempotency-Key`, with the SHA-256 of its body: at most 255 bytes of visible
/// ASCII.
fn idempotency_key(headers: &HeaderMap, body: &[u8]) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes of visible \
                 ASCII"
            ))
        })?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        body_sha256: Digest::of(body).hex(),
        // Set by the host, which knows how long keys are kept.
        stale_before: std::time::UNIX_EPOCH,
    }))
}

/// Whether the request says its body is JSON: `application/json` or `application/<x>+json`,
/// parameters such as `charset` allowed.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    // A subtype is one token: `application/x/y+json` or `application/a b+json` is no type.
    let token = subtype
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application")
        && token
        && (subtype == "json" || subtype.ends_with("+json"))
}

/// The `{pid}` of a task path: a path that is not even text names no task.
pub(super) fn task_path(
    path: Result<Path<String>, PathRejection>,
) -> Result<(String, Pid), ApiError> {
    let Path(pid) = path.map_err(|_| ApiError::NotFound("no task at that path".into()))?;
    let id = pid
        .parse()
        .map_err(|()| ApiError::NotFound(format!("no task with pid {pid:?}")))?;
    Ok((pid, id))
}

/// A task's record.
#[utoipa::path(get, path = "/api/tasks/{pid}", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses((status = 200, body = TaskRecord),
        (status = 404, description = "No such task", body = ErrorBody), AnyRoute))]
pub(super) async fn get_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskRecord>, ApiError> {
    let (pid, id) = task_pid(&state, path).await?;
    state
        .host
        .get_async(id)
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&pid))
}

fn unknown(pid: &str) -> ApiError {
    ApiError::NotFound(format!("no task with pid {pid:?}"))
}

/// Tasks per page when the client names no `limit`, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /api/tasks` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only tasks in this state.
    status: Option<Status>,
    /// Only tasks with this name.
    name: Option<String>,
    /// Only tasks of this worker.
    worker: Option<String>,
    /// Only the tasks this task spawned, by its pid.
    #[param(example = "6f1c2a9e-1")]
    parent: Option<String>,
    /// Only the tasks this schedule's ticks created.
    schedule: Option<String>,
    /// Only tasks accepted before this one: the previous page's `next`, or a task's pid.
    #[param(min_length = 1)]
    before: Option<String>,
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Tasks, newest first, a page at a time; `next` is the cursor for the following page.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", params(ListParams),
    responses((status = 200, body = Page),
        (status = 400, description = "A bad query parameter", body = ErrorBody), AnyRoute))]
pub(super) async fn list_tasks(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; status is one of scheduled, spawned, running, exited, failed, killed, limit is 1 to {MAX_PAGE}",
            rejection.body_text()
        ))
    })?;
    let before = match params.before {
        None => None,
        Some(before) => Some(cursor(&state, &before).await?),
    };
    let parent = params.parent.as_deref().map(parent).transpose()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(Json(
        state
            .host
            .list_async(&ListQuery {
                status: params.status,
                name: params.name,
                worker: params.worker,
                parent,
                schedule: params.schedule,
                before,
                limit,
            })
            .await?,
    ))
}

/// The pid a `parent` names. A pid of no known task is no error: its children, if any
/// outlived it, are still listed.
fn parent(text: &str) -> Result<Pid, ApiError> {
    text.parse()
        .map_err(|()| ApiError::BadRequest(format!("parent: {text:?} is not a pid")))
}

/// Where `before` points: a page's `next`, or the place of the task with that pid.
async fn cursor(state: &AppState, before: &str) -> Result<Cursor, ApiError> {
    if let Ok(cursor) = before.parse::<Cursor>() {
        return Ok(cursor);
    }
    let pid: Pid = before.parse().map_err(|()| {
        ApiError::BadRequest(format!(
            "before: {before:?} is neither a page's next nor a pid"
        ))
    })?;
    let record = state
        .host
        .get_async(pid)
        .await?
        .ok_or_else(|| ApiError::BadRequest(format!("before: no task with pid {before:?}")))?;
    Ok(Cursor::of(&record))
}

/// How often a kill of a task on another host of the cluster looks for its end.
const REMOTE_END_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// How long `DELETE` waits for the kill to be recorded before it answers `202` instead.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Kills a task: answers its record once the kill is recorded (`200`), or `202` if a running
/// step has not stopped within 2 s.
#[utoipa::path(delete, path = "/api/tasks/{pid}", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses(
        (status = 200, description = "Killed; the record shows it", body = TaskRecord),
        (status = 202, description = "A running step has not returned yet", body = TaskRecord),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task has already ended", body = ErrorBody),
        AnyRoute))]
pub(super) async fn kill_task(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let (pid, id) = task_pid(&state, path).await?;
    // Listen for the end before asking for it, so that it cannot pass unheard.
    let mut end = state.host.watch_end(id);
    state
        .host
        .kill_async(id)
        .await
        .map_err(|error| match error {
            KillError::NotFound(_) => ApiError::NotFound(error.to_string()),
            KillError::AlreadyEnded { .. } => ApiError::Conflict(error.to_string()),
            KillError::Store(error) => error.into(),
        })?;
    // A record evicted from the history meanwhile has ended: answer with the one seen now.
    let seen = state.host.get_async(id).await?;
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    if state.host.holds(id) {
        end.ended_by(deadline).await;
    } else {
        // Another host of the cluster ends it: its end shows in the shared store.
        while tokio::time::Instant::now() < deadline
            && state
                .host
                .get_async(id)
                .await?
                .is_some_and(|record| !record.status.is_terminal())
        {
            tokio::time::sleep(REMOTE_END_POLL).await;
        }
    }
    let record = state
        .host
        .get_async(id)
        .await?
        .or(seen)
        .ok_or_else(|| unknown(&pid))?;
    let status = if record.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(record)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Logs {
    #[schema(value_type = String)]
    pid: Pid,
    status: Status,
    lines: Vec<LogLine>,
    dropped_bytes: u64,
}

/// What a task logged and printed, capped per task.
#[utoipa::path(get, path = "/api/tasks/{pid}/logs", tag = "tasks",
    params(("pid" = String, Path, description = "The task's pid")),
    responses((status = 200, body = Logs),
        (status = 404, description = "No such task", body = ErrorBody), AnyRoute))]
pub(super) async fn get_logs(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Logs>, ApiError> {
    let (pid, id) = task_pid(&state, path).await?;
    // The record before the logs: a task that shows as ended shows every line it logged.
    let record = state
        .host
        .get_async(id)
        .await?
        .ok_or_else(|| unknown(&pid))?;
    // Evicted in between: it ended, and its lines went with it.
    let logs = state.host.logs_async(id).await?.unwrap_or_default();
    Ok(Json(Logs {
        pid: record.pid,
        status: record.status,
        lines: logs.lines,
        dropped_bytes: logs.dropped_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header value"));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!with("application/x/problem+json"));
        assert!(!with("application/a b+json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}

/// Property tests (#12) of the parsers only this file can reach: the `Idempotency-Key`
/// header, the list query and its `parent`, and the task path. The other parsers' are in
/// `crate::proptests`.
#[cfg(test)]
mod proptests {
    use axum::http::{HeaderValue, Uri};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::{Index, select};
    use sha2::{Digest as _, Sha256};

    use super::*;

    /// Every byte a header value may hold: visible ASCII, space, tab, and bytes past ASCII.
    fn header_byte() -> impl Strategy<Value = u8> {
        prop_oneof![0x20u8..=0x7e, Just(b'\t'), 0x80u8..=0xff]
    }

    const STATUSES: &[Status] = &[
        Status::Spawned,
        Status::Running,
        Status::Exited,
        Status::Failed,
        Status::Killed,
    ];

    /// `text` as a query value: every byte but the unreserved ones percent-encoded.
    fn encoded(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The list query `/api/tasks?<query>` as the handler reads it.
    fn list_query(query: &str) -> Option<Result<ListParams, QueryRejection>> {
        let uri: Uri = format!("/api/tasks?{query}").parse().ok()?;
        Some(Query::<ListParams>::try_from_uri(&uri).map(|Query(params)| params))
    }

    type Fields = (
        Option<Status>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<usize>,
    );

    fn fields(params: ListParams) -> Fields {
        (
            params.status,
            params.name,
            params.worker,
            params.parent,
            params.before,
            params.limit,
        )
    }

    /// `fields` written as a query, in the order `fields` lists them, rotated by `turn`.
    fn written(fields: &[(&str, Option<String>)], turn: Option<Index>) -> String {
        let mut pairs: Vec<String> = fields
            .iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", encoded(value.as_deref()?))))
            .collect();
        if let Some(turn) = turn.filter(|_| !pairs.is_empty()) {
            let turn = turn.index(pairs.len());
            pairs.rotate_left(turn);
        }
        pairs.join("&")
    }

    /// The query's fields written back, so that they read the same again.
    fn rewritten(fields: &Fields) -> String {
        let (status, name, worker, parent, before, limit) = fields;
        written(
            &[
                ("status", status.map(|s| s.as_str().to_owned())),
                ("name", name.clone()),
                ("worker", worker.clone()),
                ("parent", parent.clone()),
                ("before", before.clone()),
                ("limit", limit.map(|n| n.to_string())),
            ],
            None,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Exactly 1 to 255 bytes of visible ASCII is a key, read as sent and tied to the
        /// body's SHA-256; anything else a header can carry is refused as a bad request.
        #[test]
        fn an_idempotency_key_is_1_to_255_visible_ascii_bytes(
            key in prop_oneof![
                vec(header_byte(), 0..300),
                vec(0x21u8..=0x7e, 0..=300),
                vec(0x21u8..=0x7e, 250..=260),
            ],
            body in vec(any::<u8>(), 0..64),
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(
                "idempotency-key",
                HeaderValue::from_bytes(&key).expect("a header value"),
            );
            let valid = (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len())
                && key.iter().all(|b| (0x21..=0x7e).contains(b));
            match idempotency_key(&headers, &body) {
                Ok(Some(read)) => {
                    prop_assert!(valid, "accepted {key:?}");
                    prop_assert_eq!(read.key.as_bytes(), &key[..]);
                    prop_assert_eq!(read.body_sha256, format!("{:x}", Sha256::digest(&body)));
                }
                Err(ApiError::BadRequest(message)) => {
                    prop_assert!(!valid, "refused {key:?}");
                    prop_assert!(message.contains("Idempotency-Key"), "{message}");
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// A list query reads each field as sent, in any order, or is refused when `status`
        /// is not a state's name or `limit` not a count.
        #[test]
        fn a_list_query_reads_its_fields_as_sent(
            status in option::of(prop_oneof![
                select(STATUSES).prop_map(|s| s.as_str().to_owned()),
                any::<String>(),
            ]),
            name in option::of(any::<String>()),
            worker in option::of(any::<String>()),
            parent in option::of(any::<String>()),
            before in option::of(any::<String>()),
            limit in option::of(prop_oneof![
                any::<usize>().prop_map(|n| n.to_string()),
                "[0-9+-]{0,4}",
                any::<String>(),
            ]),
            turn in any::<Index>(),
        ) {
            let query = written(
                &[
                    ("status", status.clone()),
                    ("name", name.clone()),
                    ("worker", worker.clone()),
                    ("parent", parent.clone()),
                    ("before", before.clone()),
                    ("limit", limit.clone()),
                ],
                Some(turn),
            );
            let read_status = status
                .as_deref()
                .map(|text| STATUSES.iter().copied().find(|s| s.as_str() == text).ok_or(()))
                .transpose();
            let read_limit = limit.as_deref().map(str::parse::<usize>).transpose();
            let read = list_query(&query).expect("an encoded query is a URI");
            match (read_status, read_limit) {
                (Ok(status), Ok(limit)) => {
                    let read = read.map_err(|e| TestCaseError::fail(format!("{query}: {e}")))?;
                    prop_assert_eq!(fields(read), (status, name, worker, parent, before, limit));
                }
                _ => prop_assert!(read.is_err(), "{query}"),
            }
        }

        /// Any query string: never a panic, and what is read reads the same once written
        /// back.
        #[test]
        fn any_list_query_is_read_or_refused(
            query in prop_oneof![
                "((status|name|worker|parent|before|limit|x)(=[a-z0-9%+&=]{0,6})?&?){0,5}",
                "[ -~]{0,40}",
                any::<String>().prop_map(|text| encoded(&text)),
            ]
        ) {
            if let Some(Ok(read)) = list_query(&query) {
                let read = fields(read);
                let again = list_query(&rewritten(&read)).expect("an encoded query is a URI");
                prop_assert_eq!(again.map(fields).ok(), Some(read), "{}", query);
            }
        }

        /// A `parent` names the task whose pid it spells; anything else is a bad request
        /// that says which parameter was wrong.
        #[test]
        fn a_parent_is_a_pids_spelling_or_a_bad_request(
            text in prop_oneof![
                any::<String>(),
                (any::<u32>(), any::<u64>()).prop_map(|(boot, seq)| Pid::new(boot, seq).to_string()),
                "[0-9a-fA-F]{8}-[0-9a-f]{0,3}",
            ]
        ) {
            match parent(&text) {
                Ok(pid) => prop_assert_eq!(pid.to_string(), text),
                Err(ApiError::BadRequest(message)) => {
                    prop_assert!(text.parse::<Pid>().is_err());
                    prop_assert!(message.starts_with("parent: "), "{message}");
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        /// A task's path names the task whose pid it spells; any other path is a 404.
        #[test]
        fn a_task_path_is_a_pids_spelling_or_not_found(
            text in prop_oneof![
                any::<String>(),
                (any::<u32>(), any::<u64>()).prop_map(|(boot, seq)| Pid::new(boot, seq).to_string()),
                "[0-9a-fA-F]{8}-[0-9a-f]{0,3}",
            ]
        ) {
            match task_path(Ok(Path(text.clone()))) {
                Ok((raw, pid)) => {
                    prop_assert_eq!(&raw, &text);
                    prop_assert_eq!(pid.to_string(), text);
                }
                Err(ApiError::NotFound(_)) => prop_assert!(text.parse::<Pid>().is_err()),
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
