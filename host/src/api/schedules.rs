//! Schedules: a cron expression in a time zone, and the task each tick submits.
//!
//! A schedule lives in the store (so it survives a restart, and every host of a cluster runs
//! it). One thread per host reads the schedules once a second (and wakes at each tick), and
//! submits each tick's task as a client would, through the same checks, with the idempotency
//! key `schedule <name> <tick>`: however many hosts see a tick, and however often one that
//! crashed sees it again, it creates one task. A tick is then written as handled (the task it
//! created, or none if it was skipped); a host that crashes in between only submits it again,
//! and is answered with the same pid.
//!
//! Ticks missed while no host ran (found due, at a host's start, from before it started) fire
//! once, the latest of them, with `catch_up = "latest"` (the default), or are skipped with
//! `"none"`. With
//! `overlap = "skip"` (the default) a tick whose schedule's last task still runs is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{AnyRoute, ApiError, ErrorBody};
use super::submission::parse_submission;
use super::tasks::json_body;
use super::{AppState, RequestLimits};
use crate::config::is_worker_name;
use crate::host::{Host, SpawnError};
use crate::model::schedule::{CatchUp, CronTab, Overlap};
use crate::model::{NewTask, Pid, TaskRecord, time};
use crate::runtime::Digest;
use crate::store::{IdempotencyKey, ListQuery, ScheduleChange, StoreError, StoredSchedule};

/// The most schedules a host keeps; more are refused with `409`.
pub const MAX_SCHEDULES: usize = 10_000;
/// Held while a schedule is created.
static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Next ticks a schedule's view shows.
const NEXT_TICKS: usize = 5;
/// Tasks a schedule's view shows, newest first.
const LAST_TASKS: usize = 10;
/// How often the ticking thread reads the schedules at most.
const RELOAD: Duration = Duration::from_secs(1);

/// A schedule's definition, checked: as it is kept (`json`) and as it runs.
#[derive(Debug, Clone)]
struct Definition {
    json: String,
    cron: String,
    timezone: String,
    task: Value,
    overlap: Overlap,
    catch_up: CatchUp,
    tab: CronTab,
    submission: NewTask,
}

/// Checks a schedule's definition: `fields` holds `cron`, `timezone`, `task`, `overlap` and
/// `catch_up` (and nothing else it reads); each bad one is a `400` that names it.
fn definition(
    mut fields: Map<String, Value>,
    limits: &RequestLimits,
) -> Result<Definition, ApiError> {
    let bad = |message: String| ApiError::BadRequest(message);
    let mut text = |field: &str| match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    };
    let cron = text("cron")?.ok_or_else(|| bad("cron is required, e.g. \"*/5 * * * *\"".into()))?;
    let timezone = text("timezone")?.unwrap_or_else(|| "UTC".to_owned());
    let overlap = match text("overlap")? {
        None => Overlap::Skip,
        Some(name) => Overlap::parse(&name)
            .ok_or_else(|| bad("overlap must be \"skip\" or \"allow\"".into()))?,
    };
    let catch_up = match text("catch_up")? {
        None => CatchUp::Latest,
        Some(name) => CatchUp::parse(&name)
            .ok_or_else(|| bad("catch_up must be \"latest\" or \"none\"".into()))?,
    };
    let tab = CronTab::parse(&cron, &timezone).map_err(|error| bad(error.to_string()))?;
    let task = match fields.remove("task") {
        Some(Value::Object(task)) => Value::Object(task),
        _ => return Err(bad("task must be a task as POST /api/tasks takes it".into())),
    };
    if task.get("run_at").is_some_and(|v| !v.is_null())
        || task.get("delay").is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "task: a schedule's task takes no run_at or delay (its ticks say when)".into(),
        ));
    }
    let submission = parse_submission(task.to_string().as_bytes(), limits)
        .map_err(|error| bad(format!("task: {error}")))?;
    let json = serde_json::json!({
        "cron": cron,
        "timezone": timezone,
        "task": task,
        "overlap": overlap.as_str(),
        "catch_up": catch_up.as_str(),
    })
    .to_string();
    Ok(Definition {
        json,
        cron,
        timezone,
        task,
        overlap,
        catch_up,
        tab,
        submission,
    })
}

/// A stored schedule's definition read back; an error if it no longer checks (a worker gone).
fn stored_definition(
    stored: &StoredSchedule,
    limits: &RequestLimits,
) -> Result<Definition, ApiError> {
    match serde_json::from_str(&stored.definition) {
        Ok(Value::Object(fields)) => definition(fields, limits),
        _ => Err(ApiError::BadRequest(
            "the stored definition is not JSON".into(),
        )),
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ScheduleView {
    name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first,
    /// or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[schema(example = "*/5 * * * *")]
    cron: String,
    /// An IANA time zone, e.g. `Europe/Berlin`; `UTC` by default.
    #[schema(example = "Europe/Berlin")]
    timezone: String,
    /// The task each tick submits, as `POST /api/tasks` takes it.
    #[schema(value_type = Object)]
    task: Value,
    /// `skip` (the default): a tick whose last task still runs creates none; `allow`.
    #[schema(example = "skip")]
    overlap: &'static str,
    /// `latest` (the default): the latest tick missed while no host ran fires once; `none`.
    #[schema(example = "latest")]
    catch_up: &'static str,
    paused: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
    /// The latest tick handled (fired or skipped).
    #[schema(value_type = Option<String>, format = DateTime)]
    last_tick: Option<String>,
    /// The task the latest tick that fired created.
    #[schema(value_type = Option<String>)]
    last_pid: Option<Pid>,
    /// The next ticks (none while paused).
    #[schema(value_type = Vec<String>)]
    next: Vec<String>,
    /// With `GET /api/schedules/{name}`: the last tasks its ticks created, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<TaskRecord>>,
    /// Why its ticks cannot submit their task now (its worker gone, or its limits changed):
    /// they are skipped until this is mended. Absent while all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `stored` as the API shows it, with what stops its ticks, if anything: from its stored
/// definition as written when the definition no longer checks.
fn view_of(state: &AppState, stored: &StoredSchedule) -> ScheduleView {
    match stored_definition(stored, &state.limits) {
        Ok(definition) => {
            let mut view = view(stored, &definition);
            view.error = state
                .host
                .check_task(&definition.submission)
                .err()
                .map(|error| format!("task: {error}"));
            view
        }
        Err(error) => {
            let json: Value = serde_json::from_str(&stored.definition).unwrap_or(Value::Null);
            let text = |field: &str| json[field].as_str().unwrap_or_default().to_owned();
            ScheduleView {
                name: stored.name.clone(),
                cron: text("cron"),
                timezone: text("timezone"),
                task: json["task"].clone(),
                overlap: Overlap::parse(&text("overlap"))
                    .unwrap_or(Overlap::Skip)
                    .as_str(),
                catch_up: CatchUp::parse(&text("catch_up"))
                    .unwrap_or(CatchUp::Latest)
                    .as_str(),
                paused: stored.paused,
                created_at: time::format(stored.created_at),
                last_tick: stored.last_tick.map(time::format),
                last_pid: stored.last_pid,
                next: Vec::new(),
                tasks: None,
                error: Some(error.to_string()),
            }
        }
    }
}

fn view(stored: &StoredSchedule, definition: &Definition) -> ScheduleView {
    let next = if stored.paused {
        Vec::new()
    } else {
        definition
            .tab
            .upcoming(SystemTime::now(), NEXT_TICKS)
            .into_iter()
            .map(time::format)
            .collect()
    };
    ScheduleView {
        name: stored.name.clone(),
        cron: definition.cron.clone(),
        timezone: definition.timezone.clone(),
        task: definition.task.clone(),
        overlap: definition.overlap.as_str(),
        catch_up: definition.catch_up.as_str(),
        paused: stored.paused,
        created_at: time::format(stored.created_at),
        last_tick: stored.last_tick.map(time::format),
        last_pid: stored.last_pid,
        next,
        tasks: None,
        error: None,
    }
}

/// A schedule as `POST /api/schedules` takes it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "describes the body `create_schedule` reads, for the document"
)]
pub(super) struct ScheduleRequest {
    /// 1 to 64 of A-Z, a-z, 0-9, `_`, `-`.
    #[schema(example = "nightly-report")]
    name: String,
    #[schema(example = "*/5 * * * *")]
    cron: String,
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
    #[schema(value_type = Object)]
    task: Value,
    #[schema(example = "skip")]
    overlap: Option<String>,
    #[schema(example = "latest")]
    catch_up: Option<String>,
    /// Created paused: no tick fires until it is resumed.
    paused: Option<bool>,
}

/// The schedules.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Schedules {
    schedules: Vec<ScheduleView>,
}

/// The stored schedule called `name`, or `404`.
fn find(state: &AppState, name: &str) -> Result<StoredSchedule, ApiError> {
    state
        .host
        .schedules()?
        .into_iter()
        .find(|schedule| schedule.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no schedule named {name:?}")))
}

/// Create a schedule.
///
/// Each tick of `cron` in `timezone` submits `task`; the task's record names the schedule and
/// the tick (`schedule`, `schedule_tick`).
#[utoipa::path(post, path = "/api/schedules", tag = "schedules", request_body = ScheduleRequest,
    responses(
        (status = 201, description = "Created", body = ScheduleView,
            links(
                ("GetSchedule" = (operation_id = "get_schedule",
                    parameters(("name" = "$response.body#/name")))),
                ("PauseSchedule" = (operation_id = "pause_schedule",
                    parameters(("name" = "$response.body#/name")))),
                ("ResumeSchedule" = (operation_id = "resume_schedule",
                    parameters(("name" = "$response.body#/name")))),
                ("DeleteSchedule" = (operation_id = "delete_schedule",
                    parameters(("name" = "$response.body#/name")))))),
        (status = 400, description = "A bad field: the message names it", body = ErrorBody),
        (status = 413, description = "Body over --max-body-bytes", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 409, description = "A schedule of that name exists, or 10,000 do", body = ErrorBody),
        AnyRoute))]
pub(super) async fn create_schedule(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, body, state.limits.max_body_bytes)?;
    let bad = |message: String| ApiError::BadRequest(message);
    let Value::Object(mut fields) =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?
    else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let name = match fields.remove("name") {
        Some(Value::String(name)) if is_worker_name(&name) => name,
        _ => {
            return Err(bad(
                "name is required: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
    };
    let paused = match fields.remove("paused") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(paused)) => paused,
        Some(_) => return Err(bad("paused must be true or false".into())),
    };
    let definition = definition(fields, &state.limits)?;
    state
        .host
        .check_task(&definition.submission)
        .map_err(|error| bad(format!("task: {error}")))?;
    // One create at a time, from the look for the name to the write: two requests for one
    // name get one `201` and one `409` (on one host; see the README for a cluster).
    let _one_at_a_time = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let existing = state.host.schedules()?;
    if existing.iter().any(|schedule| schedule.name == name) {
        return Err(ApiError::Conflict(format!(
            "a schedule named {name:?} exists; DELETE it first"
        )));
    }
    if existing.len() >= MAX_SCHEDULES {
        return Err(ApiError::Conflict(format!(
            "{MAX_SCHEDULES} schedules exist already: DELETE one first"
        )));
    }
    let stored = StoredSchedule {
        name,
        definition: definition.json.clone(),
        paused,
        created_at: SystemTime::now(),
        last_tick: None,
        last_pid: None,
    };
    state
        .host
        .change_schedule(ScheduleChange::Put(Box::new(stored.clone())))?;
    Ok((StatusCode::CREATED, Json(view(&stored, &definition))).into_response())
}

/// The schedules, by name.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = Schedules), AnyRoute))]
pub(super) async fn list_schedules(
    State(state): State<AppState>,
) -> Result<Json<Schedules>, ApiError> {
    let schedules = state
        .host
        .schedules()?
        .iter()
        .map(|stored| view_of(&state, stored))
        .collect();
    Ok(Json(Schedules { schedules }))
}

/// A schedule, with its next ticks and the last tasks its ticks created.
#[utoipa::path(get, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = ScheduleView),
        (status = 404, description = "No such schedule", body = ErrorBody), AnyRoute))]
pub(super) async fn get_schedule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    let name = schedule_name(path)?;
    let stored = find(&state, &name)?;
    let mut view = view_of(&state, &stored);
    let page = state
        .host
        .list_async(&ListQuery {
            schedule: Some(name),
            limit: LAST_TASKS,
            ..ListQuery::default()
        })
        .await?;
    view.tasks = Some(page.tasks);
    Ok(Json(view))
}

/// Remove a schedule; the tasks it created stay.
#[utoipa::path(delete, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 204, description = "Removed"),
        (status = 404, description = "No such schedule", body = ErrorBody), AnyRoute))]
pub(super) async fn delete_schedule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = schedule_name(path)?;
    find(&state, &name)?;
    state.host.change_schedule(ScheduleChange::Delete(name))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: no tick fires until it is resumed.
#[utoipa::path(post, path = "/api/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = ScheduleView),
        (status = 404, description = "No such schedule", body = ErrorBody), AnyRoute))]
pub(super) async fn pause_schedule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, schedule_name(path)?, true)
}

/// Resume a paused schedule. The ticks that passed while it was paused are not fired.
#[utoipa::path(post, path = "/api/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = ScheduleView),
        (status = 404, description = "No such schedule", body = ErrorBody), AnyRoute))]
pub(super) async fn resume_schedule(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, schedule_name(path)?, false)
}

fn set_paused(
    state: &AppState,
    name: String,
    paused: bool,
) -> Result<Json<ScheduleView>, ApiError> {
    find(state, &name)?;
    // Resumed: what passed while it was paused is passed over, as if handled now.
    let from = (!paused).then(SystemTime::now);
    state.host.change_schedule(ScheduleChange::Pause {
        name: name.clone(),
        paused,
        from,
    })?;
    let stored = find(state, &name)?;
    Ok(Json(view_of(state, &stored)))
}

fn schedule_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::NotFound("no schedule at that path".into()))?;
    if is_worker_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::NotFound(format!("no schedule named {name:?}")))
    }
}

/// Puts the registry file's schedules in the store (a restart applies the file again; a
/// schedule paused through the API stays paused) and starts the thread that fires every
/// schedule's ticks. An error names the schedule of the file that does not check.
pub fn start(
    host: &Arc<Host>,
    limits: RequestLimits,
    from_file: &[(String, Value)],
) -> anyhow::Result<()> {
    let existing = host.schedules()?;
    for (name, json) in from_file {
        let fields = match json {
            Value::Object(fields) if is_worker_name(name) => fields.clone(),
            _ => anyhow::bail!("schedule {name:?}: a name of A-Z, a-z, 0-9, '_', '-' and a table"),
        };
        let definition = definition(fields, &limits)
            .map_err(|error| anyhow::anyhow!("schedule {name:?}: {error}"))?;
        host.check_task(&definition.submission)
            .map_err(|error| anyhow::anyhow!("schedule {name:?}: task: {error}"))?;
        let old = existing.iter().find(|schedule| schedule.name == *name);
        host.change_schedule(ScheduleChange::Put(Box::new(StoredSchedule {
            name: name.clone(),
            definition: definition.json,
            paused: old.is_some_and(|old| old.paused),
            created_at: old.map_or_else(SystemTime::now, |old| old.created_at),
            last_tick: None,
            last_pid: None,
        })))?;
    }
    let weak = Arc::downgrade(host);
    std::thread::Builder::new()
        .name("schedules".into())
        .spawn(move || tick_forever(&weak, &limits))?;
    Ok(())
}

/// The ticking thread: fires what is due, then sleeps until the next tick or a second,
/// whichever is first; ends with the host.
fn tick_forever(host: &Weak<Host>, limits: &RequestLimits) {
    let mut known: HashMap<String, (String, Result<Definition, String>)> = HashMap::new();
    // A tick due from before this host started was missed while no host ran (another host
    // of a cluster that ran meanwhile handled it).
    let started = SystemTime::now();
    loop {
        let Some(host) = host.upgrade() else { return };
        let next = tick(&host, limits, &mut known, started);
        drop(host);
        let now = SystemTime::now();
        let wait = next
            .and_then(|next| next.duration_since(now).ok())
            .map_or(RELOAD, |until| until.min(RELOAD));
        std::thread::sleep(wait.max(Duration::from_millis(5)));
    }
}

/// One pass: each schedule's due tick handled; the earliest next tick of all.
fn tick(
    host: &Host,
    limits: &RequestLimits,
    known: &mut HashMap<String, (String, Result<Definition, String>)>,
    started: SystemTime,
) -> Option<SystemTime> {
    let schedules = match host.schedules() {
        Ok(schedules) => schedules,
        Err(error) => {
            tracing::debug!(%error, "could not read the schedules");
            return None;
        }
    };
    known.retain(|name, _| schedules.iter().any(|schedule| schedule.name == *name));
    let mut earliest: Option<SystemTime> = None;
    for stored in schedules.iter().filter(|schedule| !schedule.paused) {
        let entry = known
            .entry(stored.name.clone())
            .or_insert_with(|| (String::new(), Err(String::new())));
        if entry.0 != stored.definition {
            let parsed = stored_definition(stored, limits).map_err(|error| error.to_string());
            if let Err(error) = &parsed {
                tracing::error!(schedule = %stored.name, %error,
                    "a schedule no longer checks (its worker gone?): its ticks are skipped");
            }
            *entry = (stored.definition.clone(), parsed);
        }
        let Ok(definition) = &entry.1 else { continue };
        let now = SystemTime::now();
        let base = stored.last_tick.unwrap_or(stored.created_at);
        if let Some(tick) = definition.tab.due(base, now) {
            // A moment's slack: a tick just due as this host started may be another
            // host's to record.
            // A tick another host of a cluster fires as this one starts may look missed
            // here: with `catch_up = "none"` this host skips it, and the other host's record
            // of the task it created wins over the skip (see `ScheduleChange::Ticked`).
            fire(host, stored, definition, tick, tick < started);
        }
        let next = definition.tab.next_after(now);
        earliest = match (earliest, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    earliest
}

/// Handles tick `tick` of `stored`: skips it, or submits its task.
fn fire(
    host: &Host,
    stored: &StoredSchedule,
    definition: &Definition,
    tick: SystemTime,
    missed: bool,
) {
    let name = &stored.name;
    let handled = |pid: Option<Pid>| {
        let change = ScheduleChange::Ticked {
            name: name.clone(),
            tick,
            pid,
        };
        if let Err(error) = host.change_schedule(change) {
            tracing::warn!(schedule = %name, %error, "could not record a tick");
        }
    };
    if missed && definition.catch_up == CatchUp::None {
        tracing::info!(schedule = %name, tick = %time::format(tick),
            "Schedule tick missed while no host ran: skipped (catch_up none)");
        return handled(None);
    }
    if definition.overlap == Overlap::Skip
        && let Some(last) = stored.last_pid
        && matches!(host.get(last), Ok(Some(record)) if !record.status.is_terminal())
    {
        tracing::info!(schedule = %name, tick = %time::format(tick), last = %last,
            "Schedule tick skipped: its last task still runs (overlap skip)");
        return handled(None);
    }
    let mut task = definition.submission.clone();
    task.schedule = Some((name.clone(), tick));
    let nanos = tick
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let key = format!("schedule {name} {nanos}");
    let key = IdempotencyKey {
        body_sha256: Digest::of(key.as_bytes()).hex(),
        key,
        stale_before: std::time::UNIX_EPOCH,
    };
    let submit = |task: NewTask| host.spawn(task, Some(key.clone())).and_then(|a| a.wait());
    let submitted = match submit(task.clone()) {
        // Another host of the cluster submitted this tick at the same moment: its pid.
        Err(SpawnError::Store(StoreError::KeyTaken)) => submit(task),
        answer => answer,
    };
    match submitted {
        Ok(pid) => {
            tracing::info!(schedule = %name, tick = %time::format(tick), pid = %pid,
                "Schedule fired");
            handled(Some(pid));
        }
        // The worker is gone, or its limits shrank: this tick can never submit its task.
        Err(error @ (SpawnError::UnknownWorker(_) | SpawnError::TooLong { .. })) => {
            tracing::error!(schedule = %name, tick = %time::format(tick), %error,
                "a schedule's tick cannot submit its task: skipped");
            handled(None);
        }
        // Tried again at the next pass: the tick stays due.
        Err(error) => tracing::warn!(schedule = %name, tick = %time::format(tick), %error,
            "a schedule's tick could not submit its task; trying again"),
    }
}
