//! A new, empty PostgreSQL database per test. The server is `DATABASE_URL`'s when that is set,
//! else the throwaway one `scripts/postgres.sh start` runs (installing Debian's server when
//! missing), so `cargo test` needs nothing set up by hand.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// PostgreSQL cuts longer identifiers short, which could make two names one.
const MAX_DATABASE_NAME_BYTES: usize = 63;

/// The server's URL, naming its `postgres` database: `DATABASE_URL`, or the script's server,
/// started at most once per test process.
pub fn base_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_server(),
    })
    .clone()
}

fn start_server() -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    // A missing or broken server is a broken test environment, never a reason to skip.
    let output = Command::new(&script)
        .arg("start")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "`{} start` failed ({}): PostgreSQL is needed for these tests; see its output above",
        script.display(),
        output.status
    );
    let url = String::from_utf8(output.stdout).expect("the script prints a UTF-8 URL");
    url.trim().to_owned()
}

/// The PEM file of the CA that signed the server's certificate: `DATABASE_SSLROOTCERT`, or the
/// one `scripts/postgres.sh` made for its server.
pub fn root_certificate() -> PathBuf {
    if let Some(path) = std::env::var_os("DATABASE_SSLROOTCERT").filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    assert!(
        std::env::var("DATABASE_URL").map_or(true, |url| url.is_empty()),
        "DATABASE_URL names a server whose CA these tests do not know: set DATABASE_SSLROOTCERT \
         to its PEM file (the server must speak TLS)"
    );
    base_url();
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/postgres/tls/ca.pem")
}

/// Creates an empty database named after `hint` (which tests may share) and returns its URL.
pub fn fresh_database(hint: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = database_name(hint, NEXT.fetch_add(1, Ordering::Relaxed));
    let base = base_url();
    block_on(async {
        let client = connect(&base).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
    });
    with_database(&base, &name)
}

/// `hs_<hint>_<process id>_<n>`: unique across the test processes sharing a server, and
/// recognisable, so `scripts/postgres.sh` drops the leftovers when it next starts a server.
fn database_name(hint: &str, n: u32) -> String {
    let suffix = format!("_{}_{n}", std::process::id());
    let room = MAX_DATABASE_NAME_BYTES - "hs_".len() - suffix.len();
    let hint: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!("hs_{hint}{suffix}")
}

/// `url` with its path, the database name, replaced by `database`; query parameters are kept.
fn with_database(url: &str, database: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = url.find("://").map_or(0, |scheme| scheme + "://".len());
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |slash| authority + slash);
    format!("{}/{database}{query}", &url[..path])
}

/// Runs `sql` (statements, as one batch) on the database at `url`.
pub fn execute(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    block_on(async move {
        let client = connect(&url).await;
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    });
}

/// The `(boot, seq)` key of a pid, as the store's tables hold it.
pub fn key_of(pid: &str) -> (i32, i64) {
    let (boot, seq) = pid.split_once('-').expect("a pid");
    (
        i32::from_str_radix(boot, 16).expect("hex"),
        i64::from_str_radix(seq, 16).expect("hex"),
    )
}

/// A client for `url`, its connection driven by the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {url}: {error}"));
    tokio::spawn(connection);
    client
}

/// Runs `future` to its end on a runtime of its own, on a thread of its own: callers may be
/// inside a `#[tokio::test]`, where starting another runtime on the same thread panics.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
