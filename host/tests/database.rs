//! The cluster's database (issue #21, item 5): TLS as libpq's `sslmode` asks, checked against
//! the throwaway PostgreSQL's certificate, and a password never shown, however it is given.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::postgres;
use common::process::{Binary, threads};
use common::{module, temp_dir};
use serde_json::json;

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// `url` with `user:password@` in place of its user.
fn with_password(url: &str, password: &str) -> String {
    url.replacen("://postgres@", &format!("://postgres:{password}@"), 1)
}

/// How many of the host's connections to `database` are encrypted, and how many there are.
fn encrypted_connections(database_url: &str) -> (i64, i64) {
    let database = database_url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("a database name")
        .to_owned();
    let base = postgres::base_url();
    postgres::block_on(async move {
        let client = postgres::connect(&base).await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.datname = $1 AND a.application_name LIKE 'http-spawn%'",
                &[&database],
            )
            .await
            .expect("pg_stat_ssl answers");
        (row.get(0), row.get(1))
    })
}

/// A host on the database at `url`, its log (at info) in `log`.
async fn host_on(url: &str, log: &Path) -> Binary {
    let args = [
        "--store".to_owned(),
        url.to_owned(),
        "--module".to_owned(),
        module("default").display().to_string(),
    ];
    let host = Binary::spawn_logging(&args, &[("RUST_LOG", "info")], None, Some(log));
    host.ready().await;
    host
}

/// Runs the binary on the database at `url` until it gives up: what it wrote.
fn refused(url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_http-spawn"))
        .args(["--listen", "127.0.0.1:0", "--store", url, "--module"])
        .arg(module("default"))
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success(), "it must not start");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reaches_its_database_over_tls_as_sslmode_asks() {
    let root = postgres::root_certificate();
    let dir = temp_dir("database-tls");
    let database = postgres::fresh_database("tls");

    // verify-full: the server's certificate chains to the CA and names 127.0.0.1.
    let url = with_params(
        &database,
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let host = host_on(&url, &dir.join("full.log")).await;
    let record = host.run(json!({"name": "over-tls", "duration": 0})).await;
    assert_eq!(record["status"], "exited", "{record}");
    let (encrypted, all) = encrypted_connections(&database);
    assert!(all > 0, "the host holds connections");
    assert_eq!(encrypted, all, "every connection of the host is encrypted");
    drop(host);

    // disable: plain TCP, though the server offers TLS.
    let plain = postgres::fresh_database("plain");
    let host = host_on(
        &with_params(&plain, "sslmode=disable"),
        &dir.join("plain.log"),
    )
    .await;
    host.assert_good_task_exits_0().await;
    let (encrypted, all) = encrypted_connections(&plain);
    assert_eq!(
        (encrypted, all > 0),
        (0, true),
        "no connection is encrypted"
    );
    drop(host);

    // A root that did not sign the server's certificate: no connection, said why.
    let other = root.with_file_name("other-ca.pem");
    let wrong = if other.is_file() {
        other.display().to_string()
    } else {
        "system".to_owned()
    };
    let said = refused(&with_params(
        &database,
        &format!("sslmode=verify-full&sslrootcert={wrong}"),
    ));
    assert!(
        said.contains("cannot connect") && said.to_lowercase().contains("certificate"),
        "{said}"
    );
    // verify-ca without a root to check against is refused before anything is tried.
    let said = refused(&with_params(
        &database,
        "sslmode=verify-ca&sslrootcert=/nonexistent/root.pem",
    ));
    assert!(said.contains("/nonexistent/root.pem"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_is_never_shown() {
    let dir = temp_dir("database-secrets");
    let database = postgres::fresh_database("secrets");
    let secret = "hunter2-not-for-logs";

    // The server trusts loopback, so a password is accepted whatever it is: the host joins, and
    // its log names the database without it.
    for (label, url) in [
        ("userinfo", with_password(&database, secret)),
        (
            "query",
            with_params(&database, &format!("password={secret}")),
        ),
    ] {
        let log = dir.join(format!("{label}.log"));
        let host = host_on(&url, &log).await;
        host.assert_good_task_exits_0().await;
        drop(host);
        let text = std::fs::read_to_string(&log).expect("the host's log");
        assert!(text.contains("joined the cluster"), "{label}: {text}");
        assert!(text.contains("postgres:***@"), "{label}: {text}");
        assert!(!text.contains(secret), "{label}: {text}");
    }

    // Nor when the host gives up: a database that does not answer, a URL it cannot read.
    let unreachable = format!("postgres://postgres:{secret}@127.0.0.1:1/x?password={secret}");
    let said = refused(&unreachable);
    assert!(said.contains("cannot connect"), "{said}");
    assert!(!said.contains(secret), "{said}");
    let unreadable = format!("postgres://postgres@db/x?password={secret}&connect_timeout=soon");
    let said = refused(&unreadable);
    assert!(said.contains("connect_timeout"), "{said}");
    assert!(!said.contains(secret), "{said}");

    // --help shows that HTTP_SPAWN_STORE is read, not its value.
    let help = Command::new(env!("CARGO_BIN_EXE_http-spawn"))
        .arg("--help")
        .env("HTTP_SPAWN_STORE", &unreachable)
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("HTTP_SPAWN_STORE"), "{help}");
    assert!(!help.contains(secret), "{help}");
}

/// Issue #23: an HTTP handler's read of the shared store waits for the database without
/// holding a thread. While another session holds a lock that stops every read of the tables
/// of tasks, of the running ones and of names, requests in flight add no thread to the host (a
/// handler that waited in `block_in_place` gave its runtime a new thread each), and the host
/// answers what needs no database. Once the lock is gone every one answers: reads, a kill
/// (which reads the task's record first), lookups and the list of the cluster's names, a
/// message for a task this host does not hold, a submission with an idempotency key, a page
/// after a pid, a task's event stream and the cluster's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_for_the_database_hold_no_thread() {
    const READS: usize = 24;
    let dir = temp_dir("database-slow-reads");
    let database = postgres::fresh_database("slow_reads");
    let host = host_on(&database, &dir.join("host.log")).await;
    let record = host.run(json!({"name": "read-me", "duration": 0})).await;
    let pid = record["pid"].as_str().expect("a pid").to_owned();
    let sleeper = host.spawn(json!({"name": "kill-me", "duration": 60})).await;
    host.wait_running(&sleeper).await;
    let before = threads(host.pid());

    let locker = postgres::connect(&database).await;
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE tasks, runs, names, idempotency, nodes IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .expect("the lock is taken");
    let reads: Vec<_> = (0..READS)
        .map(|i| {
            let (client, url) = (host.client.clone(), host.url(&format!("/api/tasks/{pid}")));
            let url = if i % 2 == 0 {
                url
            } else {
                format!("{url}/logs")
            };
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    // A kill reads the task's record first.
    let kill = {
        let (client, url) = (
            host.client.clone(),
            host.url(&format!("/api/tasks/{sleeper}")),
        );
        tokio::spawn(async move { client.delete(url).send().await })
    };
    // A name no task here holds is looked up in the cluster's store; a message for a task this
    // host does not hold asks the store which host does.
    let [unnamed, unnamed_alone, names] =
        ["/api/tasks/name:nobody", "/api/names/nobody", "/api/names"].map(|path| {
            let (client, url) = (host.client.clone(), host.url(path));
            tokio::spawn(async move { client.get(url).send().await })
        });
    // A page after a pid reads that task's place; a task's event stream, its record; the
    // cluster's page, its hosts.
    let others = [
        format!("/api/tasks?before={pid}"),
        format!("/api/tasks/{pid}/events"),
        "/api/cluster".to_owned(),
    ]
    .map(|path| {
        let (client, url) = (host.client.clone(), host.url(&path));
        tokio::spawn(async move { client.get(url).send().await })
    });
    let message = {
        let client = host.client.clone();
        let url = host.url(&format!("/api/tasks/{pid}/messages"));
        tokio::spawn(async move { client.post(url).json(&json!({"hello": 1})).send().await })
    };
    // A submission with an idempotency key looks the key up first.
    let keyed = {
        let (client, url) = (host.client.clone(), host.url("/api/tasks"));
        tokio::spawn(async move {
            let task = json!({"name": "keyed", "duration": 0});
            let request = client.post(url).header("idempotency-key", "slow-key");
            request.json(&task).send().await
        })
    };
    // Every read reaches the database and waits there (the store gives up after 5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = threads(host.pid());
    let (status, health) = tokio::time::timeout(Duration::from_secs(2), host.get("/api/health"))
        .await
        .expect("the host answers while its reads wait");
    assert_eq!(status, 200, "{health}");
    assert!(
        during <= before + 2,
        "{READS} reads waiting took threads: {before} before, {during} during"
    );

    locker
        .batch_execute("COMMIT")
        .await
        .expect("the lock is let go");
    for read in reads {
        let response = read.await.expect("the read ran").expect("an answer");
        assert_eq!(
            response.status(),
            200,
            "every read answers once the lock is gone"
        );
    }
    let killed = kill.await.expect("the kill ran").expect("an answer");
    assert_eq!(killed.status(), 200, "the kill answers with the task's end");
    let unnamed = unnamed.await.expect("the lookup ran").expect("an answer");
    assert_eq!(unnamed.status(), 404, "no task holds the name");
    let unnamed_alone = unnamed_alone
        .await
        .expect("the lookup ran")
        .expect("an answer");
    assert_eq!(unnamed_alone.status(), 404, "no task holds the name");
    let names = names.await.expect("the listing ran").expect("an answer");
    assert_eq!(names.status(), 200, "the cluster's names are listed");
    for other in others {
        let other = other.await.expect("the read ran").expect("an answer");
        assert_eq!(other.status(), 200, "{}", other.url());
    }
    let keyed = keyed.await.expect("the submission ran").expect("an answer");
    assert_eq!(keyed.status(), 202, "the keyed task is accepted");
    let message = message.await.expect("the send ran").expect("an answer");
    assert_eq!(
        message.status(),
        409,
        "the task has ended: nobody reads its mailbox"
    );
}
