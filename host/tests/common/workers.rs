//! What the end-to-end tests of the real binary share about workers and tasks: a registry file
//! with the default worker and the scriptable actor, submissions of the actor, a task's log as
//! its messages or as the actor's JSON lines, and a stream of submissions around a shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Remote, module};

/// `dir/http-spawn.toml`: the default worker, the scriptable actor (its std stack outgrows the
/// default 1 MiB cap), and `more` (more `[workers.*]` tables, with `{module:NAME}` for a test
/// worker's path).
pub fn registry(dir: &Path, more: &str) -> PathBuf {
    let mut more = more.to_owned();
    while let Some(start) = more.find("{module:") {
        let end = start + more[start..].find('}').expect("a closing brace");
        let name = more[start + "{module:".len()..end].to_owned();
        more.replace_range(start..=end, &module(&name).display().to_string());
    }
    let path = dir.join("http-spawn.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[workers.default]
module = "{default}"

[workers.actor]
module = "{actor}"
max_memory = "16MiB"
{more}"#,
            default = module("default").display(),
            actor = module("actor").display(),
        ),
    )
    .expect("write the registry file");
    path
}

/// A submission of the scriptable actor worker running `ops`.
pub fn actor(name: &str, ops: Value) -> Value {
    json!({"name": name, "worker": "actor", "duration": 0, "payload": {"script": ops}})
}

/// The messages of a task's captured log.
pub async fn messages(node: &Remote, pid: &str) -> Vec<String> {
    let (status, logs) = node.get(&format!("/api/tasks/{pid}/logs")).await;
    assert_eq!(status, 200, "{logs}");
    logs["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| line["message"].as_str().expect("message").to_owned())
        .collect()
}

/// The JSON lines a task of the actor worker logged.
pub async fn logged(node: &Remote, pid: &str) -> Vec<Value> {
    messages(node, pid)
        .await
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Clients submitting tasks of duration 0 to one host as fast as it answers, until stopped:
/// the pids of every `202`.
pub struct Storm {
    accepted: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Storm {
    /// `clients` clients on `base`, each request carrying `token` when one is given.
    pub fn start(base: &str, token: Option<&str>, clients: usize) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|client| {
                let remote = match token {
                    Some(token) => Remote::with_token(base.to_owned(), token),
                    None => Remote::new(base.to_owned()),
                };
                let (accepted, stop) = (Arc::clone(&accepted), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Acquire) {
                        let body = json!({"name": format!("c{client}-{n}"), "duration": 0});
                        n += 1;
                        let answer = remote
                            .client
                            .post(remote.url("/api/tasks"))
                            .json(&body)
                            .send()
                            .await;
                        match answer {
                            Ok(answer) if answer.status() == 202 => {
                                let body: Value = answer.json().await.expect("JSON");
                                let pid = body["pid"].as_str().expect("pid").to_owned();
                                accepted.lock().expect("lock").push(pid);
                            }
                            Ok(_) => {}
                            // The host is gone: wait a moment before asking again.
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                })
            })
            .collect();
        Self {
            accepted,
            stop,
            clients,
        }
    }

    /// Stops the clients: the pids of every task answered `202`.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        for client in self.clients {
            client.await.expect("client");
        }
        std::mem::take(&mut *self.accepted.lock().expect("lock"))
    }
}
