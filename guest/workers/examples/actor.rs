//! A scriptable actor for the host's end-to-end tests of messages, children, monitors, links
//! and names. Its payload is `{"script": [op, ...]}`; it runs the ops in order and, after each,
//! logs one line of JSON at info level, `{"op": "<op>", "ok": true|false, ...}`, so a test reads
//! the results from `GET /api/tasks/{pid}/logs`. The first line is always
//! `{"op": "spec", "pid", "name", "parent", "attempt"}`. A script that ends without `exit`
//! exits 0; no payload is an empty script; a payload that is not such a script fails `start`,
//! naming the op at fault.
//!
//! Ops, and what their line adds (errors are the WIT enum's case in snake_case, as `"error"`):
//! - `register {name}`, `whereis {name}` → `"pid"` (or null); `whereis_many {name, count}`
//!   looks it up `count` times (in a cluster, each a question to the database for a name no
//!   task of its host holds) → `"pid"`;
//! - `send {to, body}`: `body` is any JSON value, sent as its JSON text;
//! - `send_many {to, count, pad?}`: bodies `{"seq": 0}` to `{"seq": count-1}` (with `"pad"`, a
//!   string of `pad` bytes, when given), stopping at the first error → `"sent"`;
//! - `flood {count, pad}`: what a hostile guest does with sequential pids: sends one message of
//!   `pad` bytes to each of the `count` pids below its own, going on past every refusal →
//!   `"delivered"` and `"refused"` (one count per error);
//! - `receive {timeout_ms}` → `"got": "message"` with `"sender"` and `"body"` (parsed as JSON
//!   when it is JSON, else the string), `"got": "down"` or `"linked_exit"` with `"end"`
//!   (`{pid, status, outcome, exit_code, error}`), or `"got": "timeout"`;
//! - `receive_all {timeout_ms}`: one line per entry as `receive` logs it, until a wait times
//!   out, then `"count"`;
//! - `echo {timeout_ms}`: one line per entry as `receive` logs it, plus `"echoed"`: a message
//!   with a sender goes back to it unchanged, except the JSON string `"stop"`, which ends the
//!   loop; so does a timeout. Then `"count"`, `"echoed"` and `"until"` (`stop` or `timeout`);
//! - `spawn {worker?, name, duration?, payload?, payload_bytes?, link?, monitor?}` (a
//!   `payload_bytes` long payload `{"pad": "xx..."}` instead of `payload`) → `"pid"`, or `"error"`
//!   (`full`, `shutting_down`, `unknown_worker`, `refused`) and `"detail"`;
//! - `exec {...spawn's fields}`: spawns the child and waits for its end (`ctx.exec`) → `"end"`
//!   (as `receive` logs a `down`'s), or spawn's `"error"`; what else arrives meanwhile is kept
//!   for the receives that follow;
//! - `spawn_many {count, ...spawn's fields}`, stopping at the first error → `"spawned"`,
//!   `"pids"`;
//! - `monitor`, `link`, `unlink`, `kill` `{pid}`; `trap_exits {on}`; `sleep {ms}`;
//! - `ping {to, rounds, call?}`: sends `{"ping": i}` and waits up to 5 s for any message back,
//!   `rounds` times (a peer running `echo` answers); with `call: true`, calls instead, and
//!   waits for the answer (a peer running `serve` answers) → `"rounds"`, and when every round came back, the
//!   timings `make bench` reads, from the guest's monotonic clock: `"elapsed_us"` for all
//!   rounds, and each round trip's `"p50_us"`, `"p99_us"` and `"max_us"`;
//! - `print {text}`: writes `text` and a newline to stdout as it is, control characters and
//!   all (its own line is logged after it); `chatter {bytes, count, every_ms}` prints `count`
//!   lines of `bytes` characters each, one every `every_ms` milliseconds (each in a step of its
//!   own) → `"printed"`;
//! - `call {to, body, timeout_ms}`: calls `to` with `body` (any JSON value, as its JSON text) →
//!   `"answer"` (parsed as JSON when it is JSON), or `"error"`: `ended` (with `"end"`),
//!   `timeout`, or why it was not sent;
//! - `reply {body}`: answers the last call `receive` took (a message whose line has
//!   `"reply_to"`) with `body` (any JSON value, as its JSON text) → `"error"` on failure
//!   (`no_such_call`, `too_large`, or `no_call` when none was taken);
//! - `serve {timeout_ms}`: one line per entry as `receive` logs it, answering each call with
//!   its own body, until the JSON string `"stop"` comes or a wait times out → `"count"`,
//!   `"answered"`, `"until"`;
//! - `exit {code, result?, result_bytes?, raw_result?}`: ends with `code` and, with `result`
//!   (any JSON value), that result; `result_bytes` makes the result a JSON string that many
//!   bytes long, `raw_result` returns its text as the result unchecked (JSON or not);
//!   `fail {message, repeat?}` (ends the task failed, with `message` repeated
//!   `repeat` times; its line then gives the `"bytes"`), `trap` (aborts: a bare trap).
//!
//! Where an op takes a pid, `$self`, `$parent` and `$child` (the last child spawned) stand for
//! those tasks, and `name:<name>` for a registered one.

use http_spawn_sdk::{
    CallError, Child, Ctx, Done, End, ExecError, NameError, Received, ReplyError, SendError,
    SpawnError, Spec, WatchError,
};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

/// How long `ping` waits for each reply.
const PING_TIMEOUT_MS: u32 = 5_000;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Op {
    Register {
        name: String,
    },
    Whereis {
        name: String,
    },
    WhereisMany {
        name: String,
        count: u64,
    },
    Send {
        to: String,
        body: Value,
    },
    SendMany {
        to: String,
        count: u32,
        #[serde(default)]
        pad: usize,
    },
    Flood {
        count: u32,
        pad: usize,
    },
    Receive {
        timeout_ms: u32,
    },
    ReceiveAll {
        timeout_ms: u32,
    },
    Echo {
        timeout_ms: u32,
    },
    Spawn(ChildOp),
    SpawnMany(ChildOp),
    Exec(ChildOp),
    Monitor {
        pid: String,
    },
    Link {
        pid: String,
    },
    Unlink {
        pid: String,
    },
    Kill {
        pid: String,
    },
    TrapExits {
        on: bool,
    },
    Sleep {
        ms: u32,
    },
    Ping {
        to: String,
        rounds: u32,
        #[serde(default)]
        call: bool,
    },
    Print {
        text: String,
    },
    Chatter {
        bytes: usize,
        count: u32,
        every_ms: u32,
    },
    Call {
        to: String,
        body: Value,
        timeout_ms: u32,
    },
    Reply {
        body: Value,
    },
    Serve {
        timeout_ms: u32,
    },
    Exit {
        code: i32,
        result: Option<Value>,
        result_bytes: Option<usize>,
        raw_result: Option<String>,
    },
    Fail {
        message: String,
        repeat: Option<usize>,
    },
    Trap,
}

/// The fields of `spawn` and `spawn_many` (only the latter takes a `count`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildOp {
    count: Option<u32>,
    worker: Option<String>,
    name: String,
    #[serde(default)]
    duration: u32,
    payload: Option<Value>,
    /// A payload of `{"pad": "xx..."}`, this many bytes long in all.
    payload_bytes: Option<usize>,
    #[serde(default)]
    link: bool,
    #[serde(default)]
    monitor: bool,
}

impl ChildOp {
    fn child(&self) -> Child {
        Child {
            worker: self.worker.clone(),
            name: self.name.clone(),
            duration_secs: self.duration,
            payload: match self.payload_bytes {
                Some(bytes) => Some(format!(
                    r#"{{"pad":"{}"}}"#,
                    "x".repeat(bytes.saturating_sub(r#"{"pad":""}"#.len()))
                )),
                None => self.payload.as_ref().map(Value::to_string),
            },
            link: self.link,
            monitor: self.monitor,
        }
    }
}

/// The script in the payload, each op checked, so that a bad one fails the task at start.
fn script(spec: &Spec) -> Result<Vec<Op>, String> {
    const SHAPE: &str = r#"the actor's payload must be {"script": [op, ...]}"#;
    let Some(payload) = spec.payload.as_deref() else {
        return Ok(Vec::new());
    };
    let payload: Value =
        serde_json::from_str(payload).map_err(|e| format!("{SHAPE}, not JSON: {e}"))?;
    let Some(Value::Array(ops)) = payload.get("script") else {
        return Err(SHAPE.to_owned());
    };
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let op = Op::deserialize(op).map_err(|e| format!("script[{i}]: {e}"))?;
            match op {
                Op::Spawn(ChildOp { count: Some(_), .. })
                | Op::Exec(ChildOp { count: Some(_), .. }) => Err(format!(
                    "script[{i}]: spawn and exec take no count (spawn_many does)"
                )),
                Op::SpawnMany(ChildOp { count: None, .. }) => {
                    Err(format!("script[{i}]: spawn_many needs a count"))
                }
                op => Ok(op),
            }
        })
        .collect()
}

fn plan(spec: &Spec) -> Result<u32, String> {
    script(spec).map(|_| 0)
}

fn send_error(e: &SendError) -> &'static str {
    match e {
        SendError::NoSuchProcess => "no_such_process",
        SendError::Ended => "ended",
        SendError::MailboxFull => "mailbox_full",
        SendError::TooLarge => "too_large",
        SendError::BadPid => "bad_pid",
        SendError::Elsewhere => "elsewhere",
    }
}

fn watch_error(e: &WatchError) -> &'static str {
    match e {
        WatchError::BadPid => "bad_pid",
        WatchError::TooMany => "too_many",
    }
}

fn reply_error(e: &ReplyError) -> &'static str {
    match e {
        ReplyError::NoSuchCall => "no_such_call",
        ReplyError::TooLarge => "too_large",
    }
}

fn name_error(e: &NameError) -> &'static str {
    match e {
        NameError::Invalid => "invalid",
        NameError::Taken => "taken",
        NameError::AlreadyNamed => "already_named",
    }
}

/// A spawn error's case and its text, when it has one.
fn spawn_error(e: &SpawnError) -> Value {
    match e {
        SpawnError::Full => json!({"error": "full"}),
        SpawnError::ShuttingDown => json!({"error": "shutting_down"}),
        SpawnError::UnknownWorker(detail) => json!({"error": "unknown_worker", "detail": detail}),
        SpawnError::Refused(detail) => json!({"error": "refused", "detail": detail}),
    }
}

fn end(end: &End) -> Value {
    json!({
        "pid": end.pid,
        "status": end.status,
        "outcome": end.outcome,
        "exit_code": end.exit_code,
        "error": end.error,
        "result": end.result.as_deref().map(body),
    })
}

/// A duration in whole microseconds, saturating.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A message body as JSON when it is JSON, else as a string.
fn body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// What a `receive` got, as its log line's fields.
fn entry(received: Option<&Received>) -> Value {
    match received {
        None => json!({"got": "timeout"}),
        Some(Received::Message(m)) => {
            let mut fields = json!({"got": "message", "sender": m.sender, "body": body(&m.body)});
            if let Some(ticket) = m.reply_to {
                fields["reply_to"] = ticket.into();
            }
            fields
        }
        Some(Received::Down(e)) => json!({"got": "down", "end": end(e)}),
        Some(Received::LinkedExit(e)) => json!({"got": "linked_exit", "end": end(e)}),
    }
}

/// An op's result: whether it worked, and the fields its line adds (a JSON object).
struct Outcome {
    ok: bool,
    fields: Value,
}

impl Outcome {
    fn ok(fields: Value) -> Self {
        Self { ok: true, fields }
    }

    fn failed(error: &str) -> Self {
        Self {
            ok: false,
            fields: json!({"error": error}),
        }
    }

    fn of<E>(result: Result<(), E>, name: fn(&E) -> &'static str) -> Self {
        match result {
            Ok(()) => Self::ok(json!({})),
            Err(e) => Self::failed(name(&e)),
        }
    }
}

struct Actor {
    ctx: Ctx,
    /// The last child spawned, for `$child`.
    child: Option<String>,
    /// The ticket of the last call `receive` took, for `reply`.
    last_call: Option<u64>,
}

impl Actor {
    fn log(&self, op: &str, outcome: Outcome) {
        let mut line = outcome.fields;
        line["op"] = op.into();
        line["ok"] = outcome.ok.into();
        self.ctx.info(&line.to_string());
    }

    fn resolve(&self, pid: &str) -> Result<String, Outcome> {
        match pid {
            "$self" => Ok(self.ctx.pid().to_owned()),
            "$parent" => self
                .ctx
                .spec()
                .parent
                .clone()
                .ok_or_else(|| Outcome::failed("no_parent")),
            "$child" => self
                .child
                .clone()
                .ok_or_else(|| Outcome::failed("no_child")),
            other => Ok(other.to_owned()),
        }
    }

    /// Sends `body` to `to`, after resolving it.
    fn send(&self, to: &str, body: &str) -> Outcome {
        match self.resolve(to) {
            Ok(to) => Outcome::of(self.ctx.send(&to, body), send_error),
            Err(outcome) => outcome,
        }
    }

    fn watch(&self, pid: &str, call: fn(&Ctx, &str) -> Result<(), WatchError>) -> Outcome {
        match self.resolve(pid) {
            Ok(pid) => Outcome::of(call(&self.ctx, &pid), watch_error),
            Err(outcome) => outcome,
        }
    }

    fn spawn(&mut self, child: &ChildOp) -> Result<String, SpawnError> {
        let pid = self.ctx.spawn(&child.child())?;
        self.child = Some(pid.clone());
        Ok(pid)
    }

    /// Receives entries until a wait of `timeout_ms` times out, logging each under `op`, and
    /// answers how many came.
    async fn receive_all(&self, op: &str, timeout_ms: u32) -> usize {
        let mut count = 0;
        while let Some(received) = self.ctx.receive(timeout_ms).await {
            count += 1;
            self.log(op, Outcome::ok(entry(Some(&received))));
        }
        count
    }

    async fn echo(&self, timeout_ms: u32) -> Outcome {
        let (mut count, mut echoed) = (0, 0);
        let until = loop {
            let Some(received) = self.ctx.receive(timeout_ms).await else {
                break "timeout";
            };
            count += 1;
            let mut fields = entry(Some(&received));
            let mut stop = false;
            if let Received::Message(message) = &received {
                stop = body(&message.body) == json!("stop");
                let mut sent = false;
                if let (Some(sender), false) = (&message.sender, stop) {
                    match self.ctx.send(sender, &message.body) {
                        Ok(()) => sent = true,
                        Err(e) => fields["echo_error"] = send_error(&e).into(),
                    }
                }
                echoed += usize::from(sent);
                fields["echoed"] = sent.into();
            }
            self.log("echo", Outcome::ok(fields));
            if stop {
                break "stop";
            }
        };
        Outcome::ok(json!({"count": count, "echoed": echoed, "until": until}))
    }

    async fn ping(&self, to: &str, rounds: u32, call: bool) -> Outcome {
        let to = match self.resolve(to) {
            Ok(to) => to,
            Err(outcome) => return outcome,
        };
        let mut round_trips_us = Vec::with_capacity(rounds as usize);
        let begun = Instant::now();
        for round in 0..rounds {
            let sent_at = Instant::now();
            let ping = json!({"ping": round}).to_string();
            if call {
                match self.ctx.call(&to, &ping, PING_TIMEOUT_MS).await {
                    Ok(_) => round_trips_us.push(micros(sent_at.elapsed())),
                    Err(e) => {
                        return Outcome {
                            ok: false,
                            fields: json!({"rounds": round, "error": format!("{e:?}")}),
                        };
                    }
                }
                continue;
            }
            if let Err(e) = self.ctx.send(&to, &ping) {
                return Outcome {
                    ok: false,
                    fields: json!({"rounds": round, "error": send_error(&e)}),
                };
            }
            match self.ctx.receive(PING_TIMEOUT_MS).await {
                Some(Received::Message(_)) => round_trips_us.push(micros(sent_at.elapsed())),
                other => {
                    let mut fields = entry(other.as_ref());
                    fields["rounds"] = round.into();
                    fields["error"] = "no_reply".into();
                    return Outcome { ok: false, fields };
                }
            }
        }
        let elapsed_us = micros(begun.elapsed());
        round_trips_us.sort_unstable();
        let quantile = |q: f64| {
            let last = round_trips_us.len().saturating_sub(1);
            round_trips_us
                .get((last as f64 * q).round() as usize)
                .copied()
        };
        Outcome::ok(json!({
            "rounds": rounds,
            "elapsed_us": elapsed_us,
            "p50_us": quantile(0.5),
            "p99_us": quantile(0.99),
            "max_us": round_trips_us.last(),
        }))
    }

    async fn serve(&self, timeout_ms: u32) -> Outcome {
        let (mut count, mut answered) = (0, 0);
        let until = loop {
            let Some(received) = self.ctx.receive(timeout_ms).await else {
                break "timeout";
            };
            count += 1;
            let mut fields = entry(Some(&received));
            let mut stop = false;
            if let Received::Message(message) = &received {
                stop = body(&message.body) == json!("stop");
                if let Some(ticket) = message.reply_to {
                    match self.ctx.reply(ticket, &message.body) {
                        Ok(()) => answered += 1,
                        Err(e) => fields["reply_error"] = reply_error(&e).into(),
                    }
                }
            }
            self.log("serve", Outcome::ok(fields));
            if stop {
                break "stop";
            }
        };
        Outcome::ok(json!({"count": count, "answered": answered, "until": until}))
    }

    async fn call(&self, to: &str, body_json: &Value, timeout_ms: u32) -> Outcome {
        let to = match self.resolve(to) {
            Ok(to) => to,
            Err(outcome) => return outcome,
        };
        let text = body_json.to_string();
        match self.ctx.call(&to, &text, timeout_ms).await {
            Ok(answer) => Outcome::ok(json!({"answer": body(&answer)})),
            Err(CallError::Ended(e)) => Outcome {
                ok: false,
                fields: json!({"error": "ended", "end": end(&e)}),
            },
            Err(CallError::Timeout) => Outcome::failed("timeout"),
            Err(CallError::NotSent(e)) => Outcome::failed(send_error(&e)),
        }
    }

    /// Runs one op; `Err` ends the task with that exit.
    async fn run(&mut self, op: &Op) -> Result<Outcome, Result<Done, String>> {
        let ctx = &self.ctx;
        Ok(match op {
            Op::Register { name } => Outcome::of(ctx.register(name), name_error),
            Op::Whereis { name } => Outcome::ok(json!({"pid": ctx.whereis(name)})),
            Op::WhereisMany { name, count } => {
                let mut pid = None;
                for _ in 0..*count {
                    pid = ctx.whereis(name);
                }
                Outcome::ok(json!({"pid": pid}))
            }
            Op::Send { to, body } => self.send(to, &body.to_string()),
            Op::SendMany { to, count, pad } => {
                let mut sent = 0;
                let mut outcome = Outcome::ok(json!({}));
                let pad = "p".repeat(*pad);
                while sent < *count {
                    let body = if pad.is_empty() {
                        json!({"seq": sent})
                    } else {
                        json!({"seq": sent, "pad": pad})
                    };
                    outcome = self.send(to, &body.to_string());
                    if !outcome.ok {
                        break;
                    }
                    sent += 1;
                }
                outcome.fields["sent"] = sent.into();
                outcome
            }
            Op::Flood { count, pad } => {
                let own = self.ctx.pid();
                let (boot, seq) = own.rsplit_once('-').unwrap_or((own, "0"));
                let seq = u64::from_str_radix(seq, 16).unwrap_or(0);
                let body = json!({"pad": "f".repeat(*pad)}).to_string();
                let mut delivered = 0u32;
                let mut refused = serde_json::Map::new();
                for below in (1..=u64::from(*count)).filter_map(|k| seq.checked_sub(k)) {
                    let to = format!("{boot}-{below:x}");
                    match self.ctx.send(&to, &body) {
                        Ok(()) => delivered += 1,
                        Err(error) => {
                            let count = refused.entry(send_error(&error)).or_insert(json!(0));
                            *count = json!(count.as_u64().unwrap_or(0) + 1);
                        }
                    }
                }
                Outcome::ok(json!({"delivered": delivered, "refused": refused}))
            }
            Op::Receive { timeout_ms } => {
                let received = ctx.receive(*timeout_ms).await;
                if let Some(Received::Message(message)) = &received
                    && message.reply_to.is_some()
                {
                    self.last_call = message.reply_to;
                }
                Outcome::ok(entry(received.as_ref()))
            }
            Op::ReceiveAll { timeout_ms } => {
                let count = self.receive_all("receive_all", *timeout_ms).await;
                Outcome::ok(json!({"count": count}))
            }
            Op::Echo { timeout_ms } => self.echo(*timeout_ms).await,
            Op::Spawn(child) => match self.spawn(child) {
                Ok(pid) => Outcome::ok(json!({"pid": pid})),
                Err(e) => Outcome {
                    ok: false,
                    fields: spawn_error(&e),
                },
            },
            Op::Exec(child) => {
                let child = child.child();
                match ctx.exec(&child).await {
                    Ok(e) => Outcome::ok(json!({"end": end(&e)})),
                    Err(ExecError::NotStarted(e)) => Outcome {
                        ok: false,
                        fields: spawn_error(&e),
                    },
                    Err(ExecError::NotAwaited(pid)) => Outcome {
                        ok: false,
                        fields: json!({"error": "not_awaited", "pid": pid}),
                    },
                }
            }
            Op::SpawnMany(child) => {
                let mut pids = Vec::new();
                let mut outcome = Outcome::ok(json!({}));
                while pids.len() < child.count.unwrap_or(0) as usize {
                    match self.spawn(child) {
                        Ok(pid) => pids.push(pid),
                        Err(e) => {
                            outcome = Outcome {
                                ok: false,
                                fields: spawn_error(&e),
                            };
                            break;
                        }
                    }
                }
                outcome.fields["spawned"] = pids.len().into();
                outcome.fields["pids"] = pids.into();
                outcome
            }
            Op::Monitor { pid } => self.watch(pid, Ctx::monitor),
            Op::Link { pid } => self.watch(pid, Ctx::link),
            Op::Unlink { pid } => self.watch(pid, Ctx::unlink),
            Op::Kill { pid } => match self.resolve(pid) {
                Ok(pid) => Outcome::of(ctx.kill(&pid), send_error),
                Err(outcome) => outcome,
            },
            Op::TrapExits { on } => {
                ctx.trap_exits(*on);
                Outcome::ok(json!({}))
            }
            Op::Sleep { ms } => {
                ctx.sleep(*ms).await;
                Outcome::ok(json!({}))
            }
            Op::Ping { to, rounds, call } => self.ping(to, *rounds, *call).await,
            Op::Print { text } => {
                println!("{text}");
                Outcome::ok(json!({}))
            }
            Op::Chatter {
                bytes,
                count,
                every_ms,
            } => {
                let line = "c".repeat(*bytes);
                for _ in 0..*count {
                    println!("{line}");
                    ctx.sleep(*every_ms).await;
                }
                Outcome::ok(json!({"printed": count}))
            }
            Op::Call {
                to,
                body,
                timeout_ms,
            } => self.call(to, body, *timeout_ms).await,
            Op::Reply { body } => match self.last_call {
                Some(ticket) => Outcome::of(ctx.reply(ticket, &body.to_string()), reply_error),
                None => Outcome::failed("no_call"),
            },
            Op::Serve { timeout_ms } => self.serve(*timeout_ms).await,
            Op::Exit {
                code,
                result,
                result_bytes,
                raw_result,
            } => {
                let result = match (result, result_bytes, raw_result) {
                    (Some(value), _, _) => Some(value.to_string()),
                    (_, Some(bytes), _) => {
                        Some(format!(r#""{}""#, "r".repeat(bytes.saturating_sub(2))))
                    }
                    (_, _, Some(raw)) => Some(raw.clone()),
                    _ => None,
                };
                self.log("exit", Outcome::ok(json!({"code": code})));
                return Err(Ok(Done {
                    exit_code: *code,
                    result,
                }));
            }
            Op::Fail {
                message,
                repeat: None,
            } => {
                self.log("fail", Outcome::ok(json!({"message": message})));
                return Err(Err(message.clone()));
            }
            Op::Fail {
                message,
                repeat: Some(times),
            } => {
                let message = message.repeat(*times);
                self.log("fail", Outcome::ok(json!({"bytes": message.len()})));
                return Err(Err(message));
            }
            Op::Trap => {
                self.log("trap", Outcome::ok(json!({})));
                std::process::abort()
            }
        })
    }
}

/// The op's name, as the script spells it, for its log line.
fn name(op: &Op) -> &'static str {
    match op {
        Op::Register { .. } => "register",
        Op::Whereis { .. } => "whereis",
        Op::WhereisMany { .. } => "whereis_many",
        Op::Send { .. } => "send",
        Op::SendMany { .. } => "send_many",
        Op::Flood { .. } => "flood",
        Op::Receive { .. } => "receive",
        Op::ReceiveAll { .. } => "receive_all",
        Op::Echo { .. } => "echo",
        Op::Spawn(_) => "spawn",
        Op::SpawnMany(_) => "spawn_many",
        Op::Exec(_) => "exec",
        Op::Monitor { .. } => "monitor",
        Op::Link { .. } => "link",
        Op::Unlink { .. } => "unlink",
        Op::Kill { .. } => "kill",
        Op::TrapExits { .. } => "trap_exits",
        Op::Sleep { .. } => "sleep",
        Op::Ping { .. } => "ping",
        Op::Print { .. } => "print",
        Op::Chatter { .. } => "chatter",
        Op::Call { .. } => "call",
        Op::Reply { .. } => "reply",
        Op::Serve { .. } => "serve",
        Op::Exit { .. } => "exit",
        Op::Fail { .. } => "fail",
        Op::Trap => "trap",
    }
}

async fn run(ctx: Ctx) -> Result<Done, String> {
    let script = script(ctx.spec())?;
    let mut actor = Actor {
        ctx,
        child: None,
        last_call: None,
    };
    let spec = actor.ctx.spec();
    let line = json!({
        "pid": spec.pid, "name": spec.name, "parent": spec.parent, "attempt": spec.attempt,
    });
    actor.log("spec", Outcome::ok(line));
    for op in &script {
        match actor.run(op).await {
            Ok(outcome) => actor.log(name(op), outcome),
            Err(exit) => return exit,
        }
    }
    Ok(Done {
        exit_code: 0,
        result: None,
    })
}

http_spawn_sdk::worker!(run, plan = plan);
