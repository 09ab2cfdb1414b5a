//! A host of a cluster for the end-to-end tests: the real binary on a shared PostgreSQL
//! database, with a short lease, fast heartbeats and polls, an API token and the admin token.

use super::process::Binary;
use super::temp_dir;
use super::workers::registry;

/// The admin token every cluster test's hosts take.
pub const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// Short, so that a lost host's tasks move within a test: heartbeats at a tenth of it.
pub const LEASE: &str = "2s";
pub const HEARTBEAT: &str = "200ms";
pub const POLL: &str = "50ms";

/// Starts host `name` on the database at `url`, requests carrying `token`, with `workers`
/// added to its registry file (see [`registry`]) and `args` added to its flags (its own
/// `--lease`, `--capacity` or `--cluster-poll` replacing the defaults); does not wait for it
/// to answer.
pub fn spawn_host(url: &str, name: &str, token: &str, workers: &str, args: &[&str]) -> Binary {
    let file = registry(&temp_dir("cluster"), workers);
    let mut argv: Vec<String> = [
        "--store",
        url,
        "--node-name",
        name,
        "--config",
        &file.display().to_string(),
        "--shutdown-grace-secs",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    if !args.contains(&"--cluster-poll") {
        argv.extend(["--cluster-poll", POLL].map(String::from));
    }
    if !args.contains(&"--lease") {
        argv.extend(["--lease", LEASE, "--heartbeat", HEARTBEAT].map(String::from));
    }
    if !args.contains(&"--capacity") {
        argv.extend(["--capacity", "64"].map(String::from));
    }
    argv.extend(args.iter().map(ToString::to_string));
    let env = [
        ("HTTP_SPAWN_API_TOKEN", token),
        ("HTTP_SPAWN_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    Binary::spawn(&argv, &env, Some(token))
}

/// [`spawn_host`], waiting until it answers.
pub async fn start_host(
    url: &str,
    name: &str,
    token: &str,
    workers: &str,
    args: &[&str],
) -> Binary {
    let host = spawn_host(url, name, token, workers, args);
    host.ready().await;
    host
}
