//! Property tests for the parsers of outside input (#12): request bodies, pids and cursors,
//! content types, the registry file, the flags' sizes and durations, store locations, and the
//! names of restart policies, outcomes and states.
//!
//! Example tests beside each parser pin the cases someone thought of; these hold for inputs
//! nobody did. Three kinds of property, everywhere: no input panics; what the host writes (or
//! a client or operator may validly write) parses back to exactly that; and whatever is
//! accepted obeys every rule, while what breaks one is refused with that rule's reason.
//!
//! The parsers private to `api::tasks` (the `Idempotency-Key` header, the list query and its
//! `parent`, and the task path) have their properties in that file's tests, which alone can
//! reach them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Value};

use crate::actor::ActorScope;
use crate::api::{ApiError, RequestLimits, is_json, parse_submission};
use crate::config::{
    self, CACHE_OFF, Config, ConfigError, DEFAULT_FUEL_PER_STEP, DEFAULT_MAX_DURATION_SECS,
    DEFAULT_MAX_MEMORY, DEFAULT_MODULE, DEFAULT_WORKER, STORE_MEMORY, StoreLocation, WorkerConfig,
    is_worker_name,
};
use crate::model::{
    NewTask, OnHostLoss, Outcome, Pid, RestartPolicy, Status, WASM_PAGE_BYTES, parse_memory_size,
};
use crate::store::Cursor;

/// Cases for cheap properties: a few milliseconds each in a debug build.
const CASES: u32 = 256;
/// Cases for properties that write a file or build the command line each time.
const FEW_CASES: u32 = 64;

// ---- Edits: near misses of valid text -------------------------------------------------------

/// An edit of a text or some bytes: where, what, and whether to insert, remove or replace.
type Edit<T> = (Index, T, u8);

fn edit<T: Clone>(mut items: Vec<T>, edits: Vec<Edit<T>>) -> Vec<T> {
    for (at, item, kind) in edits {
        let at = at.index(items.len() + 1);
        match kind {
            0 => items.insert(at, item),
            1 if at < items.len() => {
                items.remove(at);
            }
            _ if at < items.len() => items[at] = item,
            _ => items.push(item),
        }
    }
    items
}

/// `text` as it is or with up to three single-character edits, with characters from
/// `alphabet`: text that is valid, almost, or sometimes still.
fn edited(
    text: impl Strategy<Value = String>,
    alphabet: &'static [char],
) -> impl Strategy<Value = String> {
    let edits = vec((any::<Index>(), select(alphabet), 0..3u8), 0..=3);
    (text, edits)
        .prop_map(|(text, edits)| edit(text.chars().collect(), edits).into_iter().collect())
}

/// `bytes` with one to three single-byte edits.
fn edited_bytes(bytes: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edits = vec((any::<Index>(), any::<u8>(), 0..3u8), 1..=3);
    (bytes, edits).prop_map(|(bytes, edits)| edit(bytes, edits))
}

/// The characters a pid or a cursor is written in, and their near misses.
const PID_CHARS: &[char] = &[
    '0', '1', '9', 'a', 'f', 'g', 'A', 'F', '-', '+', '.', ' ', 'é',
];

// ---- Pids and cursors -----------------------------------------------------------------------

fn pid() -> impl Strategy<Value = Pid> {
    (any::<u32>(), any::<u64>()).prop_map(|(boot, seq)| Pid::new(boot, seq))
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (any::<u64>(), pid())
        .prop_map(|(nanos, pid)| Cursor::new(UNIX_EPOCH + Duration::from_nanos(nanos), pid))
}

/// Text that is, or is nearly, a pid.
fn pid_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        edited(pid().prop_map(|pid| pid.to_string()), PID_CHARS),
    ]
}

/// Text that is, or is nearly, a cursor.
fn cursor_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        edited(cursor().prop_map(|cursor| cursor.to_string()), PID_CHARS),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Every pid is written in a form that parses back to it.
    #[test]
    fn a_pid_parses_back_from_how_it_is_written(pid in pid()) {
        prop_assert_eq!(pid.to_string().parse::<Pid>(), Ok(pid));
    }

    /// Whatever parses as a pid is that pid's one spelling: with the round trip above, the
    /// texts accepted are exactly the pids' written forms.
    #[test]
    fn a_pid_has_one_spelling(text in pid_like()) {
        if let Ok(pid) = text.parse::<Pid>() {
            prop_assert_eq!(pid.to_string(), text);
        }
    }

    /// Every cursor is written in a form that parses back to it.
    #[test]
    fn a_cursor_parses_back_from_how_it_is_written(cursor in cursor()) {
        prop_assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
    }

    /// Whatever parses as a cursor is that cursor's one spelling.
    #[test]
    fn a_cursor_has_one_spelling(text in cursor_like()) {
        if let Ok(cursor) = text.parse::<Cursor>() {
            prop_assert_eq!(cursor.to_string(), text);
        }
    }

    /// `before` takes a page's `next` or a task's pid: neither form parses as the other, so
    /// each names one place.
    #[test]
    fn a_pid_and_a_cursor_never_read_as_each_other(cursor in cursor(), pid in pid()) {
        prop_assert_eq!(cursor.to_string().parse::<Pid>(), Err(()));
        prop_assert!(pid.to_string().parse::<Cursor>().is_err());
    }
}

// ---- Request bodies (`POST /api/tasks`) ----------------------------------------------------

/// The duration a request gets when it names none (`api::tasks`).
const DEFAULT_DURATION_SECS: u32 = 3;

/// Any finite number as JSON, which has no others.
fn any_float() -> BoxedStrategy<Value> {
    any::<f64>()
        .prop_filter_map("JSON numbers are finite", |x| {
            serde_json::Number::from_f64(x).map(Value::Number)
        })
        .boxed()
}

/// Any JSON value a few levels deep, with numbers from `float` besides whole ones. (serde_json
/// is built with `float_roundtrip`, so any finite number comes back as it was sent.)
fn json_with(float: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float,
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Any JSON value, a few levels deep.
fn json() -> BoxedStrategy<Value> {
    json_with(any_float())
}

/// Any JSON value that is neither `null` nor a string.
fn json_not_text() -> impl Strategy<Value = Value> {
    json().prop_filter("neither null nor a string", |v| {
        !v.is_null() && !v.is_string()
    })
}

/// Any JSON value that is not a whole number of seconds: negative, fractional, or not a
/// number at all.
fn json_not_seconds() -> impl Strategy<Value = Value> {
    prop_oneof![
        (i64::MIN..0).prop_map(Value::from),
        any_float(),
        json().prop_filter("not a number, not null", |v| !v.is_null() && !v.is_number()),
    ]
}

/// The limits of a host started with no flags: what the generated ones leave alone.
static DEFAULT_LIMITS: LazyLock<RequestLimits> = LazyLock::new(|| {
    RequestLimits::from_config(&Config::from_args(["http-spawn"]).expect("the default config"))
});

/// Limits as a host might set them: tight ones, the defaults, and the widest.
fn limits() -> impl Strategy<Value = RequestLimits> {
    let seconds = || prop_oneof![0..=100u32, Just(3_600), any::<u32>()];
    (prop_oneof![1..=300usize, Just(256)], seconds(), seconds()).prop_map(
        |(name, duration, deadline)| RequestLimits {
            max_name_bytes: name,
            max_duration_secs: duration,
            max_deadline_secs: deadline,
            ..DEFAULT_LIMITS.clone()
        },
    )
}

/// A task name of at most `max` bytes that is not blank and holds no NUL.
fn task_name(max: usize) -> impl Strategy<Value = String> {
    vec(
        any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        1..=max.min(40),
    )
    .prop_map(move |chars| {
        let mut name: String = chars.into_iter().collect();
        while name.len() > max {
            name.pop();
        }
        name
    })
    .prop_filter("a name is not blank", |name| !name.trim().is_empty())
}

fn worker_name() -> impl Strategy<Value = String> {
    prop_oneof![Just(DEFAULT_WORKER.to_owned()), "[A-Za-z0-9_-]{1,64}",]
}

/// A restart policy as a body or the registry file writes it (`restart`, `max_attempts`),
/// and the policy it means.
fn written_restart()
-> impl Strategy<Value = (Option<&'static str>, Option<u32>, Option<RestartPolicy>)> {
    prop_oneof![
        Just((None, None, None)),
        Just((Some("never"), None, Some(RestartPolicy::Never))),
        Just((
            Some("on-failure"),
            None,
            Some(RestartPolicy::OnFailure {
                max_attempts: RestartPolicy::DEFAULT_MAX_ATTEMPTS
            })
        )),
        (2..=RestartPolicy::MAX_ATTEMPTS).prop_map(|n| (
            Some("on-failure"),
            Some(n),
            Some(RestartPolicy::OnFailure { max_attempts: n })
        )),
    ]
}

fn on_host_loss() -> impl Strategy<Value = OnHostLoss> {
    prop_oneof![Just(OnHostLoss::Restart), Just(OnHostLoss::Fail)]
}

fn actor_scope() -> impl Strategy<Value = ActorScope> {
    prop_oneof![
        Just(ActorScope::Any),
        Just(ActorScope::Tree),
        Just(ActorScope::Descendants)
    ]
}

/// A body within `limits`, and the task it must parse to. Absent fields are left out or,
/// sometimes, written as `null`, which means the same.
fn valid_request(
    limits: &RequestLimits,
) -> impl Strategy<Value = (Map<String, Value>, NewTask)> + use<> {
    (
        task_name(limits.max_name_bytes),
        option::of(worker_name()),
        option::of(0..=limits.max_duration_secs),
        option::of(0..=limits.max_deadline_secs),
        written_restart(),
        option::of(on_host_loss()),
        option::of(json_with(any_float())),
        any::<bool>(),
    )
        .prop_map(
            |(name, worker, duration, deadline, restart, on_host_loss, payload, nulls)| {
                let mut body = Map::new();
                let mut put = |key: &str, value: Option<Value>| match value {
                    Some(value) => {
                        body.insert(key.to_owned(), value);
                    }
                    None if nulls => {
                        body.insert(key.to_owned(), Value::Null);
                    }
                    None => {}
                };
                let (written, attempts, policy) = restart;
                put("name", Some(Value::from(name.clone())));
                put("worker", worker.clone().map(Value::from));
                put("duration", duration.map(Value::from));
                put("deadline", deadline.map(Value::from));
                put("restart", written.map(Value::from));
                put("max_attempts", attempts.map(Value::from));
                put(
                    "on_host_loss",
                    on_host_loss.map(|policy| Value::from(policy.as_str())),
                );
                put("payload", payload.clone());
                let task = NewTask {
                    name,
                    worker,
                    duration: duration.unwrap_or(DEFAULT_DURATION_SECS),
                    payload: payload
                        .filter(|payload| !payload.is_null())
                        .map(|payload| payload.to_string()),
                    deadline,
                    restart: policy,
                    on_host_loss,
                    ..NewTask::default()
                };
                (body, task)
            },
        )
}

/// One rule of `limits` broken: the fields that break it, and what the refusal must say.
fn broken_field(
    limits: &RequestLimits,
) -> impl Strategy<Value = (Vec<(&'static str, Value)>, String)> + use<> {
    let max_name = limits.max_name_bytes;
    let one = |key: &'static str, value: Value| vec![(key, value)];
    let seconds_rules = |field: &'static str, max: u32| {
        prop_oneof![
            (0..=u64::from(u32::MAX)).prop_map(move |over| (
                one(field, Value::from(u64::from(max) + 1 + over)),
                format!("{field} must be at most {max} seconds")
            )),
            json_not_seconds().prop_map(move |value| (
                one(field, value),
                format!("{field} must be a non-negative integer number of seconds")
            )),
        ]
    };
    let not_a_policy = |names: &'static [&'static str]| {
        prop_oneof![
            any::<String>()
                .prop_filter("not a policy", move |name| !names.contains(&name.as_str()))
                .prop_map(Value::from),
            json_not_text(),
        ]
    };
    prop_oneof![
        Just((one("name", Value::Null), "name is required".to_owned())),
        json_not_text().prop_map(move |name| (one("name", name), "name must be a string".into())),
        vec(
            select(&[' ', '\t', '\n', '\r', '\u{a0}', '\u{2028}', '\u{3000}'][..]),
            0..8
        )
        .prop_map(move |blank| (
            one("name", Value::from(blank.into_iter().collect::<String>())),
            "name must not be empty".into()
        )),
        vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 1..8).prop_map(move |tail| {
            let name = "n".repeat(max_name) + &tail.into_iter().collect::<String>();
            (
                one("name", Value::from(name)),
                format!("name must be at most {max_name} bytes"),
            )
        }),
        (any::<String>(), any::<String>()).prop_map(move |(before, after)| (
            one("name", Value::from(format!("n{before}\0{after}"))),
            "name must not contain NUL characters".into()
        )),
        seconds_rules("duration", limits.max_duration_secs),
        seconds_rules("deadline", limits.max_deadline_secs),
        prop_oneof![
            any::<String>()
                .prop_filter("not a worker's name", |name| !is_worker_name(name))
                .prop_map(Value::from),
            json_not_text(),
        ]
        .prop_map(move |worker| (
            one("worker", worker),
            "worker must be a worker's name".into()
        )),
        not_a_policy(&["never", "on-failure"]).prop_map(move |restart| (
            one("restart", restart),
            "restart must be \"never\" or \"on-failure\"".into()
        )),
        prop_oneof![
            (0..=1u64).prop_map(Value::from),
            (u64::from(RestartPolicy::MAX_ATTEMPTS) + 1..=u64::MAX).prop_map(Value::from),
            json().prop_filter("not a whole number, not null", |v| !v.is_null()
                && v.as_u64().is_none()),
        ]
        .prop_map(move |attempts| (
            vec![
                ("restart", Value::from("on-failure")),
                ("max_attempts", attempts)
            ],
            "max_attempts must be an integer from 2 to 10".into()
        )),
        (
            prop_oneof![Just(Value::Null), Just(Value::from("never"))],
            json().prop_filter("not null", |v| !v.is_null())
        )
            .prop_map(move |(restart, attempts)| (
                vec![("restart", restart), ("max_attempts", attempts)],
                "max_attempts goes with restart: \"on-failure\"".into()
            )),
        not_a_policy(&["restart", "fail"]).prop_map(move |policy| (
            one("on_host_loss", policy),
            "on_host_loss must be \"restart\" or \"fail\"".into()
        )),
    ]
}

/// The keys a body may carry, and a few it may not.
const BODY_KEYS: &[&str] = &[
    "name",
    "worker",
    "duration",
    "deadline",
    "restart",
    "max_attempts",
    "on_host_loss",
    "payload",
    "other",
];

/// Values a body's fields might plausibly hold, valid or not, and any JSON at all.
fn plausible_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json(),
        (0..20u64).prop_map(Value::from),
        select(
            &[
                "report",
                "never",
                "on-failure",
                "restart",
                "fail",
                "default",
                " ",
                ""
            ][..]
        )
        .prop_map(Value::from),
    ]
}

/// Any body a client might send: valid bodies with fields overwritten, objects of the body's
/// keys with plausible values, any JSON at all, any bytes, and near misses of valid bodies.
fn any_body() -> impl Strategy<Value = (RequestLimits, Vec<u8>)> {
    limits().prop_flat_map(|limits| {
        let fields = || btree_map(select(BODY_KEYS), plausible_value(), 0..9);
        let body = prop_oneof![
            (valid_request(&limits), fields()).prop_map(|((mut body, _), fields)| {
                body.extend(
                    fields
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value)),
                );
                serde_json::to_vec(&body).expect("JSON")
            }),
            fields().prop_map(|fields| serde_json::to_vec(&fields).expect("JSON")),
            json().prop_map(|value| serde_json::to_vec(&value).expect("JSON")),
            vec(any::<u8>(), 0..256),
            edited_bytes(
                valid_request(&limits)
                    .prop_map(|(body, _)| serde_json::to_vec(&body).expect("JSON"))
            ),
        ];
        (Just(limits), body)
    })
}

/// What the answer to `body` must be: an accepted task holds exactly what the body said
/// (or the defaults) within `limits`, and anything else is refused as a bad request.
fn answered_as_documented(body: &[u8], limits: &RequestLimits) -> Result<(), TestCaseError> {
    let answer = parse_submission(body, limits);
    let (fields, task) = match (serde_json::from_slice::<Value>(body), answer) {
        (_, Err(error)) => {
            prop_assert!(matches!(error, ApiError::BadRequest(_)), "{error:?}");
            return Ok(());
        }
        (Ok(Value::Object(fields)), Ok(task)) => (fields, task),
        (value, Ok(task)) => {
            prop_assert!(false, "accepted {task:?} from {value:?}");
            return Ok(());
        }
    };
    let field = |key: &str| fields.get(key).filter(|value| !value.is_null());
    let seconds = |key: &str, max: u32| -> Result<Option<u32>, TestCaseError> {
        Ok(match field(key) {
            None => None,
            Some(value) => {
                let secs = value.as_u64().and_then(|n| u32::try_from(n).ok());
                prop_assert!(secs.is_some_and(|secs| secs <= max), "{key}: {value}");
                secs
            }
        })
    };

    prop_assert_eq!(field("name"), Some(&Value::from(task.name.as_str())));
    prop_assert!(!task.name.trim().is_empty());
    prop_assert!(task.name.len() <= limits.max_name_bytes);
    prop_assert_eq!(
        Some(task.duration),
        seconds("duration", limits.max_duration_secs)?.or(Some(DEFAULT_DURATION_SECS))
    );
    prop_assert_eq!(
        task.deadline,
        seconds("deadline", limits.max_deadline_secs)?
    );
    prop_assert_eq!(
        task.worker.clone().map(Value::from),
        field("worker").cloned()
    );
    prop_assert!(task.worker.as_deref().is_none_or(is_worker_name));
    let restart = field("restart");
    let attempts = field("max_attempts");
    match task.restart {
        None => prop_assert!(restart.is_none() && attempts.is_none()),
        Some(RestartPolicy::Never) => {
            prop_assert_eq!(restart, Some(&Value::from("never")));
            prop_assert!(attempts.is_none());
        }
        Some(RestartPolicy::OnFailure { max_attempts }) => {
            prop_assert_eq!(restart, Some(&Value::from("on-failure")));
            prop_assert!((2..=RestartPolicy::MAX_ATTEMPTS).contains(&max_attempts));
            prop_assert_eq!(
                attempts.map_or(
                    Some(u64::from(RestartPolicy::DEFAULT_MAX_ATTEMPTS)),
                    Value::as_u64
                ),
                Some(u64::from(max_attempts))
            );
        }
    }
    prop_assert_eq!(
        task.on_host_loss.map(|policy| Value::from(policy.as_str())),
        field("on_host_loss").cloned()
    );
    prop_assert_eq!(task.payload, field("payload").map(Value::to_string));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any body gets an answer, never a panic: a task that is exactly what the body said, or
    /// a 400.
    #[test]
    fn any_body_is_accepted_as_written_or_refused((limits, body) in any_body()) {
        answered_as_documented(&body, &limits)?;
    }

    /// A body that keeps every rule is accepted, and its fields come back unchanged.
    #[test]
    fn a_valid_body_is_accepted_unchanged(
        (limits, (body, task)) in limits().prop_flat_map(|limits| (Just(limits.clone()), valid_request(&limits)))
    ) {
        let bytes = serde_json::to_vec(&body).expect("JSON");
        let parsed = parse_submission(&bytes, &limits);
        prop_assert!(matches!(&parsed, Ok(parsed) if *parsed == task), "{parsed:?}, not {task:?}");
    }

    /// A body that breaks one rule is refused with that rule's reason.
    #[test]
    fn a_broken_field_is_refused_with_its_reason(
        (limits, (mut body, _), (fields, reason)) in limits().prop_flat_map(|limits| {
            (Just(limits.clone()), valid_request(&limits), broken_field(&limits))
        })
    ) {
        for (key, value) in fields {
            body.insert(key.to_owned(), value);
        }
        let bytes = serde_json::to_vec(&body).expect("JSON");
        match parse_submission(&bytes, &limits) {
            Err(ApiError::BadRequest(message)) => {
                prop_assert!(message.contains(&reason), "{message:?} does not say {reason:?}");
            }
            other => prop_assert!(false, "{other:?}, not refused with {reason:?}"),
        }
    }
}

// ---- Names: restart policies, outcomes, states ---------------------------------------------

const STATUSES: [Status; 5] = [
    Status::Spawned,
    Status::Running,
    Status::Exited,
    Status::Failed,
    Status::Killed,
];

const NAME_CHARS: &[char] = &['a', 'e', 'n', 'r', '_', '-', ' ', 'A', 'É', '\0'];

/// Text that is, or is nearly, one of the names the API gives a policy, outcome or state.
fn name_like() -> impl Strategy<Value = String> {
    let mut names: Vec<String> = Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect();
    names.extend(STATUSES.iter().map(|s| s.as_str().to_owned()));
    names.extend(["never", "on-failure", "restart", "fail"].map(str::to_owned));
    prop_oneof![any::<String>(), edited(select(names), NAME_CHARS)]
}

/// `max_attempts` as a body or the registry file may give it.
fn attempts() -> impl Strategy<Value = u64> {
    prop_oneof![0..=12u64, any::<u64>()]
}

#[test]
fn every_name_parses_back_and_is_what_the_api_writes() {
    for outcome in Outcome::ALL {
        assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        assert_eq!(
            serde_json::to_value(outcome).expect("JSON"),
            Value::from(outcome.as_str())
        );
    }
    for status in STATUSES {
        let written = serde_json::to_value(status).expect("JSON");
        assert_eq!(written, Value::from(status.as_str()));
        assert_eq!(
            serde_json::from_value::<Status>(written).expect("a status"),
            status
        );
    }
    for policy in [OnHostLoss::Restart, OnHostLoss::Fail] {
        assert_eq!(OnHostLoss::parse(policy.as_str()), Some(policy));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Only a name exactly as the API writes it parses, to what it names.
    #[test]
    fn only_exact_names_parse(text in name_like()) {
        if let Some(outcome) = Outcome::parse(&text) {
            prop_assert_eq!(outcome.as_str(), &text);
        }
        if let Some(policy) = OnHostLoss::parse(&text) {
            prop_assert_eq!(policy.as_str(), &text);
        }
        // A `status` query parameter is read by serde, as a JSON string would be.
        if let Ok(status) = serde_json::from_value::<Status>(Value::from(text.as_str())) {
            prop_assert_eq!(status.as_str(), &text);
        }
    }

    /// Every restart policy, written as a body or the file writes it, parses back to itself.
    #[test]
    fn a_restart_policy_parses_back((restart, attempts, policy) in written_restart()) {
        prop_assert_eq!(RestartPolicy::parse(restart, attempts.map(u64::from)), Ok(policy));
    }

    /// Whatever `restart` and `max_attempts` hold: an accepted policy is the one they name,
    /// with its attempts in range, and a refusal names the field at fault.
    #[test]
    fn a_restart_policy_is_what_its_fields_say(
        restart in option::of(name_like()),
        attempts in option::of(attempts()),
    ) {
        match RestartPolicy::parse(restart.as_deref(), attempts) {
            Ok(None) => prop_assert!(restart.is_none() && attempts.is_none()),
            Ok(Some(policy)) => {
                prop_assert_eq!(Some(policy.as_str()), restart.as_deref());
                prop_assert!((1..=RestartPolicy::MAX_ATTEMPTS).contains(&policy.max_attempts()));
                if let Some(attempts) = attempts {
                    prop_assert_eq!(u64::from(policy.max_attempts()), attempts);
                }
            }
            Err(error) => {
                let message = error.to_string();
                let known = matches!(restart.as_deref(), None | Some("never" | "on-failure"));
                let field = if known { "max_attempts" } else { "restart" };
                prop_assert!(message.starts_with(field), "{restart:?}, {attempts:?}: {message}");
            }
        }
    }
}

// ---- Sizes, store locations, worker names, content types -----------------------------------

/// Memory sizes' units as an operator may write them, and their scale.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kb", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mb", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gb", 1 << 30),
    ("gib", 1 << 30),
];

/// The most memory a task may be given: 4 GiB.
const MAX_MEMORY_BYTES: u64 = 4 << 30;

/// `unit` with each letter's case chosen by `upper`.
fn recased(unit: &str, upper: &[bool]) -> String {
    unit.chars()
        .zip(upper.iter().chain(std::iter::repeat(&false)))
        .map(|(c, &upper)| if upper { c.to_ascii_uppercase() } else { c })
        .collect()
}

/// A valid memory size in any unit that divides it, in any case and spacing, and its bytes.
fn written_size() -> impl Strategy<Value = (String, u64)> {
    let pages = prop_oneof![
        1..=MAX_MEMORY_BYTES / WASM_PAGE_BYTES,
        (1..=4u64).prop_map(|gib| gib << 14),
        (1..=4096u64).prop_map(|mib| mib << 4),
    ];
    let space = || "[ \t]{0,2}";
    (
        pages,
        any::<Index>(),
        vec(any::<bool>(), 3),
        space(),
        space(),
        space(),
    )
        .prop_map(|(pages, unit, upper, lead, gap, trail)| {
            let bytes = pages * WASM_PAGE_BYTES;
            let units: Vec<_> = SIZE_UNITS
                .iter()
                .filter(|(_, scale)| bytes.is_multiple_of(*scale))
                .collect();
            let (unit, scale) = units[unit.index(units.len())];
            let number = bytes / scale;
            let unit = recased(unit, &upper);
            (format!("{lead}{number}{gap}{unit}{trail}"), bytes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// A size in any unit, case and spacing is read as its bytes.
    #[test]
    fn a_memory_size_is_read_as_its_bytes((text, bytes) in written_size()) {
        prop_assert_eq!(parse_memory_size(&text), Ok(bytes));
    }

    /// Any number in any unit: accepted as its bytes when they are whole wasm pages from one
    /// page to 4 GiB, else refused with the rule it breaks.
    #[test]
    fn a_memory_size_is_refused_with_its_reason(
        number in prop_oneof![any::<u64>(), 0..=(1u64 << 33), Just(u64::MAX)],
        unit in select(SIZE_UNITS),
    ) {
        let (unit, scale) = unit;
        let answer = parse_memory_size(&format!("{number}{unit}"));
        match number.checked_mul(scale) {
            Some(bytes) if (WASM_PAGE_BYTES..=MAX_MEMORY_BYTES).contains(&bytes) => {
                if bytes.is_multiple_of(WASM_PAGE_BYTES) {
                    prop_assert_eq!(answer, Ok(bytes));
                } else {
                    prop_assert!(matches!(&answer, Err(e) if e.contains("whole number")), "{answer:?}");
                }
            }
            _ => prop_assert!(matches!(&answer, Err(e) if e.contains("outside")), "{answer:?}"),
        }
    }

    /// Any text at all: never a panic, and an accepted size is whole pages in range.
    #[test]
    fn any_memory_size_accepted_is_whole_pages(
        text in prop_oneof![any::<String>(), edited(written_size().prop_map(|(text, _)| text), &['0', '9', 'k', 'M', 'i', 'B', ' ', '.', '-', '+', 'é'])]
    ) {
        if let Ok(bytes) = parse_memory_size(&text) {
            prop_assert!(bytes.is_multiple_of(WASM_PAGE_BYTES), "{text:?}: {bytes}");
            prop_assert!((WASM_PAGE_BYTES..=MAX_MEMORY_BYTES).contains(&bytes), "{text:?}: {bytes}");
        }
    }

    /// `--store` and the file's `store`: exactly `memory`, `sqlite:` and a path, or a
    /// PostgreSQL URL (which the database's client parses further at start).
    #[test]
    fn a_store_location_is_memory_a_sqlite_path_or_a_postgres_url(
        text in prop_oneof![
            any::<String>(),
            Just(STORE_MEMORY.to_owned()),
            "(sqlite:|memory|sqlite|postgres://|postgresql://|postgres:)\\PC{0,12}",
        ]
    ) {
        let postgres = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let expected = match text.strip_prefix("sqlite:") {
            _ if text == STORE_MEMORY => Some(StoreLocation::Memory),
            _ if postgres => Some(StoreLocation::Postgres(text.clone())),
            Some(path) if !path.is_empty() => Some(StoreLocation::Sqlite(PathBuf::from(path))),
            _ => None,
        };
        prop_assert_eq!(StoreLocation::parse(&text).ok(), expected);
    }

    /// A worker's name, in a request, a URL or the file: 1 to 64 of `[A-Za-z0-9_-]`.
    #[test]
    fn a_worker_name_is_1_to_64_url_safe_characters(
        name in prop_oneof![any::<String>(), "[A-Za-z0-9_-]{0,70}", edited(worker_name(), &['a', '0', '_', '-', '.', '/', ' ', 'é'])]
    ) {
        let expected = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        prop_assert_eq!(is_worker_name(&name), expected);
    }

    /// A JSON content type is one whatever its case, its parameters and the space around it.
    #[test]
    fn a_json_content_type_is_one_however_written(
        kind in select(&["application", "text", "image", "", "application/x"][..]),
        subtype in select(&["json", "problem+json", "vnd.api+json", "jsonx", "json+xml", "+json", "", "xml", "a b+json", "x/json"][..]),
        upper in vec(any::<bool>(), 24),
        params in "[ ]{0,2}(;[ ]?[a-z]{1,8}=[a-z0-9\"+/-]{0,8}){0,2}",
        lead in "[ \t]{0,2}",
    ) {
        let essence = format!("{kind}/{subtype}");
        // A subtype is one token (RFC 9110): no space, no second `/`.
        let token = !subtype.contains([' ', '/']);
        let expected = kind == "application"
            && token
            && (subtype == "json" || subtype.ends_with("+json"));
        let written = format!("{lead}{}{params}", recased(&essence, &upper));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&written).expect("a header value"));
        prop_assert_eq!(is_json(&headers), expected, "{:?}", written);
    }

    /// Any `Content-Type` bytes a request can carry: never a panic, and nothing without
    /// `json` in it is JSON.
    #[test]
    fn any_content_type_is_answered(bytes in vec(any::<u8>(), 0..64)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value);
            let lower = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            prop_assert!(!is_json(&headers) || lower.contains("json"), "{lower:?}");
        }
    }
}

// ---- The registry file and the flags -------------------------------------------------------

/// Parses `args` (after the program's name), with the registry file `text` if given, written
/// to a scratch directory of its own; answers the file's directory too.
fn parse_config(text: Option<&str>, args: &[&str]) -> (Result<Config, ConfigError>, PathBuf) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("http-spawn-proptest-{}-{n}", std::process::id()));
    // Generated files listen beyond loopback too; what a host needs to do so (a token, or
    // --insecure-no-auth) is config's own unit tests' business.
    let mut argv = vec!["http-spawn".to_owned(), "--insecure-no-auth".to_owned()];
    if let Some(text) = text {
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("http-spawn.toml");
        std::fs::write(&path, text).expect("write the file");
        argv.extend(["--config".to_owned(), path.display().to_string()]);
    }
    argv.extend(args.iter().map(|&arg| arg.to_owned()));
    let config = Config::from_args(argv);
    if text.is_some() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    (config, dir)
}

/// A `[server]` table's settings, as generated.
#[derive(Debug, Clone)]
struct ServerGen {
    listen: Option<SocketAddr>,
    worker_threads: Option<usize>,
    http_threads: Option<usize>,
    capacity: Option<u32>,
    max_queue: Option<usize>,
    max_history: Option<usize>,
    watch_interval_ms: Option<u64>,
    store: Option<String>,
    cache_dir: Option<String>,
}

/// A `[workers.<name>]` table, as generated: `max_memory` as written, and its bytes.
#[derive(Debug, Clone)]
struct WorkerGen {
    module: String,
    fuel_per_step: Option<u64>,
    max_memory: Option<(toml::Value, u64)>,
    max_duration_secs: Option<u32>,
    restart: (Option<&'static str>, Option<u32>, Option<RestartPolicy>),
    on_host_loss: Option<OnHostLoss>,
    actor_scope: Option<ActorScope>,
}

/// Integers TOML can hold (it has no unsigned ones).
fn toml_int() -> impl Strategy<Value = u64> {
    prop_oneof![0..=1_000u64, 0..=i64::MAX as u64]
}

fn listen() -> impl Strategy<Value = SocketAddr> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
        any::<u128>().prop_map(|ip| IpAddr::V6(Ipv6Addr::from(ip))),
    ];
    (ip, any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

fn server_gen() -> impl Strategy<Value = ServerGen> {
    (
        option::of(listen()),
        option::of(toml_int().prop_map(|n| n as usize)),
        option::of(toml_int().prop_map(|n| n as usize)),
        option::of(1..=u32::MAX),
        option::of(toml_int().prop_map(|n| n as usize)),
        option::of(toml_int().prop_map(|n| n as usize)),
        option::of(toml_int()),
        option::of(prop_oneof![
            Just(STORE_MEMORY.to_owned()),
            "sqlite:\\PC{1,12}"
        ]),
        option::of(prop_oneof![Just(CACHE_OFF.to_owned()), "\\PC{1,12}"]),
    )
        .prop_map(
            |(
                listen,
                worker_threads,
                http_threads,
                capacity,
                max_queue,
                max_history,
                watch_interval_ms,
                store,
                cache_dir,
            )| ServerGen {
                listen,
                worker_threads,
                http_threads,
                capacity,
                max_queue,
                max_history,
                watch_interval_ms,
                store,
                cache_dir,
            },
        )
}

fn worker_gen() -> impl Strategy<Value = WorkerGen> {
    let max_memory = prop_oneof![
        (1..=MAX_MEMORY_BYTES / WASM_PAGE_BYTES).prop_map(|pages| {
            let bytes = pages * WASM_PAGE_BYTES;
            (toml::Value::Integer(bytes as i64), bytes)
        }),
        written_size().prop_map(|(text, bytes)| (toml::Value::String(text), bytes)),
    ];
    (
        "\\PC{0,16}",
        option::of(toml_int()),
        option::of(max_memory),
        option::of(any::<u32>()),
        written_restart(),
        option::of(on_host_loss()),
        option::of(actor_scope()),
    )
        .prop_map(
            |(
                module,
                fuel_per_step,
                max_memory,
                max_duration_secs,
                restart,
                on_host_loss,
                actor_scope,
            )| {
                WorkerGen {
                    module,
                    fuel_per_step,
                    max_memory,
                    max_duration_secs,
                    restart,
                    on_host_loss,
                    actor_scope,
                }
            },
        )
}

/// A registry file's text: what was generated, written by the `toml` crate so that any
/// string is quoted as TOML needs.
fn registry_text(server: &ServerGen, workers: &BTreeMap<String, WorkerGen>) -> String {
    let int = |n: u64| toml::Value::Integer(n as i64);
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: Option<toml::Value>| {
        if let Some(value) = value {
            table.insert(key.to_owned(), value);
        }
    };
    put(
        "listen",
        server
            .listen
            .map(|addr| toml::Value::String(addr.to_string())),
    );
    put(
        "worker_threads",
        server.worker_threads.map(|n| int(n as u64)),
    );
    put("http_threads", server.http_threads.map(|n| int(n as u64)));
    put("capacity", server.capacity.map(|n| int(u64::from(n))));
    put("max_queue", server.max_queue.map(|n| int(n as u64)));
    put("max_history", server.max_history.map(|n| int(n as u64)));
    put("watch_interval_ms", server.watch_interval_ms.map(int));
    put("store", server.store.clone().map(toml::Value::String));
    put(
        "cache_dir",
        server.cache_dir.clone().map(toml::Value::String),
    );
    let mut file = toml::Table::new();
    file.insert("server".to_owned(), toml::Value::Table(table));
    let mut tables = toml::Table::new();
    for (name, worker) in workers {
        let mut table = toml::Table::new();
        let mut put = |key: &str, value: Option<toml::Value>| {
            if let Some(value) = value {
                table.insert(key.to_owned(), value);
            }
        };
        put("module", Some(toml::Value::String(worker.module.clone())));
        put("fuel_per_step", worker.fuel_per_step.map(int));
        put(
            "max_memory",
            worker.max_memory.clone().map(|(written, _)| written),
        );
        put(
            "max_duration_secs",
            worker.max_duration_secs.map(|n| int(u64::from(n))),
        );
        let (restart, attempts, _) = worker.restart;
        put(
            "restart",
            restart.map(|r| toml::Value::String(r.to_owned())),
        );
        put("max_attempts", attempts.map(|n| int(u64::from(n))));
        put(
            "on_host_loss",
            worker
                .on_host_loss
                .map(|p| toml::Value::String(p.as_str().to_owned())),
        );
        put(
            "actor_scope",
            worker
                .actor_scope
                .map(|scope| toml::Value::String(scope.as_str().to_owned())),
        );
        tables.insert(name.clone(), toml::Value::Table(table));
    }
    file.insert("workers".to_owned(), toml::Value::Table(tables));
    toml::to_string(&file).expect("TOML")
}

/// A valid registry file: its text, and what was generated.
fn valid_registry() -> impl Strategy<Value = (String, ServerGen, BTreeMap<String, WorkerGen>)> {
    (server_gen(), btree_map(worker_name(), worker_gen(), 0..4))
        .prop_map(|(server, workers)| (registry_text(&server, &workers), server, workers))
}

/// Lines a registry file is made of, right and wrong: tables, the keys it knows and some it
/// does not, values of every TOML type and none.
fn toml_ish_line() -> impl Strategy<Value = String> {
    let key = select(
        &[
            "listen",
            "capacity",
            "max_queue",
            "store",
            "cache_dir",
            "module",
            "fuel_per_step",
            "max_memory",
            "max_duration_secs",
            "restart",
            "max_attempts",
            "on_host_loss",
            "actor_scope",
            "workers",
            "server",
            "fuel",
            "x.y",
        ][..],
    );
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        "\"\\PC{0,10}\"",
        "'[^'\n]{0,10}'",
        select(
            &[
                "true",
                "1MiB",
                "\"1MiB\"",
                "\"sqlite:\"",
                "\"on-failure\"",
                "[1, \"a\"]",
                "{ a = 1 }",
                "1.5",
                "1979-05-27",
                "\"memory\"",
                "\"127.0.0.1:8080\"",
                ""
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        select(
            &[
                "[server]",
                "[workers]",
                "[workers.a]",
                "[workers.\"a b\"]",
                "[[workers]]",
                "[workers.a",
                "",
                "# note"
            ][..]
        )
        .prop_map(str::to_owned),
        "\\[workers\\.[A-Za-z0-9_-]{1,8}\\]",
        (key, value).prop_map(|(key, value)| format!("{key} = {value}")),
        "\\PC{0,20}",
    ]
}

/// Any text an operator might leave in the file: lines right and wrong, near misses of valid
/// files, anything at all.
fn toml_ish_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(toml_ish_line(), 0..8).prop_map(|lines| lines.join("\n")),
        3 => edited(
            valid_registry().prop_map(|(text, _, _)| text),
            &['[', ']', '"', '=', '\n', '.', ' ', '1', 'a', '-']
        ),
        1 => any::<String>(),
    ]
}

/// Units of a duration as an operator may write them, and one of each.
const DURATION_UNITS: &[(&str, Duration)] = &[
    ("ns", Duration::from_nanos(1)),
    ("us", Duration::from_micros(1)),
    ("ms", Duration::from_millis(1)),
    ("s", Duration::from_secs(1)),
    ("sec", Duration::from_secs(1)),
    ("secs", Duration::from_secs(1)),
    ("m", Duration::from_secs(60)),
    ("min", Duration::from_secs(60)),
    ("mins", Duration::from_secs(60)),
    ("h", Duration::from_secs(3_600)),
    ("hr", Duration::from_secs(3_600)),
    ("hours", Duration::from_secs(3_600)),
    ("d", Duration::from_secs(86_400)),
    ("days", Duration::from_secs(86_400)),
    ("w", Duration::from_secs(604_800)),
    ("weeks", Duration::from_secs(604_800)),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(FEW_CASES))]

    /// A valid registry file configures exactly what it says, relative paths from its own
    /// directory, and every worker it does not name gets the defaults.
    #[test]
    fn a_registry_file_configures_what_it_says((text, server, workers) in valid_registry()) {
        let (config, dir) = parse_config(Some(&text), &[]);
        let config = match config {
            Ok(config) => config,
            Err(error) => return Err(TestCaseError::fail(format!("{error}\n{text}"))),
        };
        let default_memory = parse_memory_size(DEFAULT_MAX_MEMORY).expect("the default size");
        prop_assert_eq!(config.listen, server.listen.unwrap_or(config::DEFAULT_LISTEN.parse().expect("an address")));
        prop_assert_eq!(config.worker_threads, server.worker_threads);
        prop_assert_eq!(config.http_threads, server.http_threads);
        prop_assert_eq!(config.capacity, server.capacity.unwrap_or(config::DEFAULT_CAPACITY));
        prop_assert_eq!(config.max_queue, server.max_queue.unwrap_or(config::DEFAULT_MAX_QUEUE));
        prop_assert_eq!(config.max_history, server.max_history.unwrap_or(config::DEFAULT_MAX_HISTORY));
        prop_assert_eq!(config.watch_interval_ms, server.watch_interval_ms.unwrap_or(config::DEFAULT_WATCH_INTERVAL_MS));
        let store = server.store.as_deref().map(|store| match store.strip_prefix("sqlite:") {
            Some(path) => StoreLocation::Sqlite(dir.join(path)),
            None => StoreLocation::Memory,
        });
        prop_assert_eq!(&config.store, &store);
        let cache_dir = server.cache_dir.as_deref().map(|cache| {
            if cache == CACHE_OFF { PathBuf::from(cache) } else { dir.join(cache) }
        });
        prop_assert_eq!(&config.cache_dir, &cache_dir);

        let mut expected: Vec<WorkerConfig> = workers
            .iter()
            .map(|(name, worker)| WorkerConfig {
                name: name.clone(),
                module: dir.join(&worker.module),
                fuel_per_step: worker.fuel_per_step.unwrap_or(DEFAULT_FUEL_PER_STEP),
                max_memory: worker.max_memory.as_ref().map_or(default_memory, |&(_, bytes)| bytes),
                max_duration_secs: worker.max_duration_secs.unwrap_or(DEFAULT_MAX_DURATION_SECS),
                restart: worker.restart.2.unwrap_or(RestartPolicy::Never),
                on_host_loss: worker.on_host_loss.unwrap_or(OnHostLoss::Restart),
                actor_scope: worker.actor_scope.unwrap_or_default(),
                priority: crate::model::DEFAULT_PRIORITY,
                max_running: None,
                per_key_running: None,
                rate: None,
                checkpoint: crate::model::CheckpointPolicy::Off,
            })
            .collect();
        if !workers.contains_key(DEFAULT_WORKER) {
            expected.push(WorkerConfig {
                name: DEFAULT_WORKER.to_owned(),
                module: PathBuf::from(DEFAULT_MODULE),
                fuel_per_step: DEFAULT_FUEL_PER_STEP,
                max_memory: default_memory,
                max_duration_secs: DEFAULT_MAX_DURATION_SECS,
                restart: RestartPolicy::Never,
                on_host_loss: OnHostLoss::Restart,
                actor_scope: ActorScope::Any,
                priority: crate::model::DEFAULT_PRIORITY,
                max_running: None,
                per_key_running: None,
                rate: None,
                checkpoint: crate::model::CheckpointPolicy::Off,
            });
            expected.sort_by(|a, b| a.name.cmp(&b.name));
        }
        prop_assert_eq!(config.workers, expected);
    }

    /// Any text in the file: never a panic; either a configuration with a default worker and
    /// well-named workers, or an error about the file that names its line.
    #[test]
    fn any_registry_file_is_read_or_refused_by_line(text in toml_ish_text()) {
        match parse_config(Some(&text), &[]).0 {
            Ok(config) => {
                let names: Vec<&str> = config.workers.iter().map(|w| w.name.as_str()).collect();
                prop_assert!(names.contains(&DEFAULT_WORKER), "{names:?}");
                prop_assert!(names.iter().all(|name| is_worker_name(name)), "{names:?}");
                prop_assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
                prop_assert!(config.capacity >= 1);
            }
            Err(ConfigError::File { message, .. }) => {
                prop_assert!(message.contains("line "), "{text:?}: {message}");
            }
            Err(error) => prop_assert!(false, "{text:?}: {error}"),
        }
    }

    /// `--history-ttl` and `--idempotency-ttl`: a sum of whole units, as an operator writes
    /// it, is read as its total.
    #[test]
    fn a_duration_flag_is_read_as_its_total(
        parts in vec((0..1_000u64, select(DURATION_UNITS)), 1..4),
        gap in "[ ]{0,1}",
    ) {
        let written: Vec<String> = parts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect();
        let written = written.join(&gap);
        let total: Duration = parts.iter().map(|&(n, (_, one))| one * n as u32).sum();
        let (config, _) = parse_config(None, &[
            &format!("--history-ttl={written}"),
            &format!("--idempotency-ttl={written}"),
        ]);
        let config = config.map_err(|error| TestCaseError::fail(format!("{written:?}: {error}")))?;
        prop_assert_eq!(config.history_ttl, total, "{:?}", written);
        prop_assert_eq!(config.idempotency_ttl, total, "{:?}", written);
    }

    /// Any text for a duration or size flag: never a panic, and the flag holds exactly what
    /// its parser reads, or the command line is refused.
    #[test]
    fn any_duration_or_size_flag_is_its_parsers_reading(
        text in prop_oneof![any::<String>(), "[0-9]{1,4} ?(ms|s|m|h|d|w|MiB|KiB|x|)", edited(written_size().prop_map(|(text, _)| text), &['0', 'k', 'M', 'i', 'B', 's', ' ', '-'])]
    ) {
        let (config, _) = parse_config(None, &[&format!("--history-ttl={text}")]);
        prop_assert_eq!(config.ok().map(|c| c.history_ttl), humantime::parse_duration(&text).ok());
        let (config, _) = parse_config(None, &[&format!("--max-memory={text}")]);
        prop_assert_eq!(config.ok().map(|c| c.max_memory), parse_memory_size(&text).ok());
    }
}
