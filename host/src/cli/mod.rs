//! The client subcommands of the `http-spawn` binary (issue #27): `spawn`, `ps`, `get`, `logs`,
//! `kill`, `send`, `call`, `events`, `workers`, `schedules`, `cluster`, `health`, `top` and
//! `completions`. They talk to a host over its HTTP API only, found by `--url` (or
//! `HTTP_SPAWN_URL`) with `--token` (`HTTP_SPAWN_TOKEN`) and `--admin-token`
//! (`HTTP_SPAWN_ADMIN_TOKEN`). With no subcommand, or `serve`, the binary runs the host (see
//! `main.rs`), so every flag of the host keeps working.
//!
//! Tables for people by default, the host's JSON with `-o json`; colours only on a terminal;
//! a failure is one line on stderr with the host's message, and a non-zero exit.

mod client;
mod commands;
mod output;
mod sse;
mod top;

use std::ffi::OsString;

use clap::{CommandFactory as _, Parser, Subcommand};

use client::Client;
pub use client::Failure;
use output::Format;

/// The address a client subcommand reaches when none is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The subcommand names that make the binary a client; anything else runs the host.
const CLIENT_COMMANDS: &[&str] = &[
    "spawn",
    "ps",
    "get",
    "logs",
    "kill",
    "send",
    "call",
    "events",
    "workers",
    "schedules",
    "cluster",
    "health",
    "top",
    "completions",
    "help",
];

/// A WebAssembly-sandboxed task host, and its command line.
///
/// With no subcommand (or `serve`) it runs the host: see `http-spawn serve --help` for its
/// flags. The other subcommands talk to a running host over its HTTP API.
#[derive(Debug, Parser)]
#[command(name = "http-spawn", version, propagate_version = true)]
pub struct Cli {
    /// The host's address.
    #[arg(long, global = true, env = "HTTP_SPAWN_URL", default_value = DEFAULT_URL)]
    url: String,

    /// The API token, if the host asks for one.
    #[arg(long, global = true, env = "HTTP_SPAWN_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// The admin token, for what changes workers or the cluster.
    #[arg(
        long,
        global = true,
        env = "HTTP_SPAWN_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// How to print: tables for people, or the host's JSON.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the host (what the binary does with no subcommand); its flags follow.
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<OsString>,
    },
    /// Submits a task: prints its pid, or with --wait its end, and exits with its exit code.
    Spawn(commands::SpawnArgs),
    /// Lists tasks, newest first: the running ones, or those --status or --all names.
    Ps(commands::PsArgs),
    /// Shows a task's record.
    Get { pid: String },
    /// Prints a task's log; with -f, follows it until the task ends.
    Logs {
        pid: String,
        /// Follow the log as the task writes it, until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Kills a task.
    Kill { pid: String },
    /// Puts a JSON message in a task's mailbox.
    Send {
        pid: String,
        /// The message: JSON, or @file to read it from a file (@- for stdin).
        message: String,
    },
    /// Calls a task: sends a JSON message and prints its answer.
    Call {
        pid: String,
        /// The call: JSON, or @file (@- for stdin).
        message: String,
        /// Seconds to wait for the answer (fractions allowed).
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Prints every task's events as they happen, until interrupted.
    Events,
    /// Lists, deploys, rolls back, pauses and resumes workers.
    #[command(subcommand)]
    Workers(commands::WorkersCommand),
    /// Lists, adds, pauses, resumes and removes cron schedules.
    #[command(subcommand)]
    Schedules(commands::SchedulesCommand),
    /// Shows the hosts of the cluster; `cluster drain NAME` hands a host's tasks to the others.
    Cluster {
        #[command(subcommand)]
        command: Option<commands::ClusterCommand>,
    },
    /// Shows the host's health: live and queued tasks, capacity, totals.
    Health,
    /// A live view of the host: live tasks, starts and ends a second, the running tasks.
    Top(top::TopArgs),
    /// Prints a shell's completion script (`http-spawn completions bash > ...`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Whether `args` (the binary's, its own name first) ask for a client subcommand rather than
/// the host: the first argument that is not one of the client's own options (`--url`,
/// `--token`, `--admin-token`, `-o`) names a client subcommand.
pub fn is_client(args: &[OsString]) -> bool {
    const TAKE_A_VALUE: &[&str] = &["--url", "--token", "--admin-token", "-o", "--output"];
    let mut rest = args.iter().skip(1).map(|arg| arg.to_str().unwrap_or(""));
    while let Some(arg) = rest.next() {
        if TAKE_A_VALUE.contains(&arg) {
            rest.next();
        } else if !(TAKE_A_VALUE
            .iter()
            .any(|option| arg.starts_with(&format!("{option}=")))
            || (arg.starts_with("-o") && arg.len() > 2))
        {
            return CLIENT_COMMANDS.contains(&arg);
        }
    }
    false
}

/// The host's flags in `args` when they ask for `serve`: the arguments without it.
pub fn serve_flags(args: &[OsString]) -> Option<Vec<OsString>> {
    (args.get(1).and_then(|arg| arg.to_str()) == Some("serve")).then(|| {
        let mut flags = args.to_vec();
        flags.remove(1);
        flags
    })
}

/// Runs the client subcommand `args` ask for: the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "http-spawn", &mut std::io::stdout());
        return 0;
    }
    let client = match Client::new(&cli.url, cli.token.clone(), cli.admin_token.clone()) {
        Ok(client) => client,
        Err(failure) => return failed(&failure),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failed(&Failure::new(format!("starting the runtime: {error}"))),
    };
    match runtime.block_on(commands::run(&client, cli.output, cli.command)) {
        Ok(code) => code,
        Err(failure) => failed(&failure),
    }
}

/// Says `failure` on stderr, in one line: its exit code.
fn failed(failure: &Failure) -> i32 {
    eprintln!("error: {}", failure.message);
    failure.code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn client_subcommands_are_told_from_the_host_s_flags() {
        for client in [
            "http-spawn ps",
            "http-spawn -o json ps",
            "http-spawn --url http://h:1 --token t spawn x",
            "http-spawn --output=json -ojson logs 1-2",
            "http-spawn help",
        ] {
            assert!(is_client(&args(client)), "{client}");
        }
        for host in [
            "http-spawn",
            "http-spawn --store memory",
            "http-spawn serve --listen 0.0.0.0:1",
            "http-spawn --url http://h:1",
            "http-spawn --listen ps",
        ] {
            assert!(!is_client(&args(host)), "{host}");
        }
        assert_eq!(
            serve_flags(&args("http-spawn serve --store memory")),
            Some(args("http-spawn --store memory"))
        );
        assert_eq!(serve_flags(&args("http-spawn --store memory")), None);
    }
}
