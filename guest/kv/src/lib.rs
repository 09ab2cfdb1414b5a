//! An example actor: a key-value store that lives as one task, answers calls, and returns what
//! it holds as its result. Erlang's `gen_server` in a few lines of `async fn`.
//!
//! Its payload may name it, `{"name": "cache"}` (default `kv`): it registers that name, so
//! clients reach it as `name:cache`. Then, for the task's duration, it answers each call
//! (`POST /api/tasks/name:cache/calls`, or `ctx.call` from another task) whose body is one of
//! - `{"op": "put", "key": K, "value": V}` → `{"ok": true, "previous": V | null}`,
//! - `{"op": "get", "key": K}` → `{"value": V | null}`,
//! - `{"op": "delete", "key": K}` → `{"ok": true, "previous": V | null}`,
//! - `{"op": "keys"}` → `{"keys": [K, ...]}` (sorted),
//!
//! and anything else → `{"error": "..."}`. The message (or call) `"stop"` ends it at once; so
//! does the end of its duration. Either way it exits 0 with its entries as its result
//! (`GET /api/tasks/{pid}/result`), `{"entries": {K: V, ...}}`. Plain messages that are not
//! `"stop"` are logged and otherwise ignored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http_spawn_sdk::{Ctx, Json, Received};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A call's body.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Put { key: String, value: Value },
    Get { key: String },
    Delete { key: String },
    Keys,
}

/// The store, returned as the task's result.
#[derive(Debug, Default, Serialize)]
struct Store {
    entries: BTreeMap<String, Value>,
}

impl Store {
    /// The answer to the call `body`.
    fn answer(&mut self, body: &str) -> Value {
        let request = match serde_json::from_str::<Request>(body) {
            Ok(request) => request,
            Err(error) => {
                return json!({"error": format!("not a request this store takes: {error}")});
            }
        };
        match request {
            Request::Put { key, value } => {
                json!({"ok": true, "previous": self.entries.insert(key, value)})
            }
            Request::Get { key } => json!({"value": self.entries.get(&key)}),
            Request::Delete { key } => json!({"ok": true, "previous": self.entries.remove(&key)}),
            Request::Keys => json!({"keys": self.entries.keys().collect::<Vec<_>>()}),
        }
    }
}

/// The name the payload asks for, `kv` by default.
fn name(ctx: &Ctx) -> Result<String, String> {
    let Some(payload) = ctx.spec().payload.as_deref() else {
        return Ok("kv".to_owned());
    };
    let payload: Value = serde_json::from_str(payload)
        .map_err(|error| format!("the payload is not JSON: {error}"))?;
    match payload.get("name") {
        None => Ok("kv".to_owned()),
        Some(Value::String(name)) => Ok(name.clone()),
        Some(_) => Err("the payload's name must be a string".to_owned()),
    }
}

async fn run(ctx: Ctx) -> Result<Json<Store>, String> {
    let name = name(&ctx)?;
    ctx.register(&name)
        .map_err(|error| format!("the name {name:?} could not be registered: {error:?}"))?;
    ctx.info(&format!("kv store {name:?} ready"));
    let until = Instant::now() + Duration::from_secs(u64::from(ctx.spec().duration_secs));
    let mut store = Store::default();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
        if timeout_ms == 0 {
            break;
        }
        let Some(received) = ctx.receive(timeout_ms).await else {
            break;
        };
        let Received::Message(message) = received else {
            continue;
        };
        if message.body.trim() == r#""stop""# {
            if let Some(ticket) = message.reply_to {
                let _ = ctx.reply(ticket, r#"{"ok": true, "stopping": true}"#);
            }
            break;
        }
        match message.reply_to {
            Some(ticket) => {
                let answer = store.answer(&message.body).to_string();
                if ctx.reply(ticket, &answer).is_err() {
                    // Larger than a message may be (`keys` of a big store): say so instead,
                    // so that the call does not stay open.
                    let too_large = r#"{"error": "the answer is larger than a message may be"}"#;
                    if let Err(error) = ctx.reply(ticket, too_large) {
                        ctx.warn(&format!("a reply was not taken: {error:?}"));
                    }
                }
            }
            None => ctx.info(&format!("a message that is not a call: {}", message.body)),
        }
    }
    ctx.info(&format!(
        "kv store {name:?} done with {} entries",
        store.entries.len()
    ));
    Ok(Json(store))
}

http_spawn_sdk::worker!(run);
