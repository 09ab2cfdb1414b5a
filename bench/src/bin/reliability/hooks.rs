//! Cases 5 and 6, written elsewhere and only called here, each when it exists:
//! `scripts/fuzz-api.sh long` (the API fuzzed at length) and `cargo test -p http-spawn --test
//! http` (slow clients and connection limits). Each is bounded by `timeout`, which stops its
//! whole process group, and passes when it exits 0; its output goes to the case's directory.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::{Args, Verdict, repo_root};

pub fn fuzz_api(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let script = repo_root().join("scripts/fuzz-api.sh");
    if !script.is_file() {
        return Ok(Verdict::skip("scripts/fuzz-api.sh is not there yet"));
    }
    bounded(
        args,
        dir,
        "scripts/fuzz-api.sh long",
        script.as_os_str(),
        &["long"],
    )
}

pub fn http_tests(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    if !repo_root().join("host/tests/http.rs").is_file() {
        return Ok(Verdict::skip("host/tests/http.rs is not there yet"));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    bounded(
        args,
        dir,
        "cargo test -p http-spawn --test http",
        &cargo,
        &["test", "-p", "http-spawn", "--test", "http"],
    )
}

/// Runs `program` with `argv` from the repository's root under `timeout`, its output in
/// `dir/output.log`.
fn bounded(
    args: &Args,
    dir: &Path,
    label: &str,
    program: &OsStr,
    argv: &[&str],
) -> anyhow::Result<Verdict> {
    let log_path = dir.join("output.log");
    let log = std::fs::File::create(&log_path)?;
    crate::progress(label, &format!("output in {}", log_path.display()));
    let status = Command::new("timeout")
        .arg(format!("{}s", args.hook_timeout_secs))
        .arg(program)
        .args(argv)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running {label}"))?;
    let mut verdict = Verdict::default();
    verdict.figure(match status.code() {
        Some(code) => format!("`{label}` exited {code}"),
        None => format!("`{label}` ended by a signal"),
    });
    verdict.check(status.success(), || {
        if status.code() == Some(124) {
            format!("stopped after {} s", args.hook_timeout_secs)
        } else {
            format!("failed; its output is in {}", log_path.display())
        }
    });
    Ok(verdict)
}
