//! API tokens end to end: a host with tokens refuses its API and dashboard to requests without
//! one (`401` with a challenge), takes any of its tokens as a bearer header, or the session
//! the dashboard signs in with, and leaves the probes open; the admin endpoints keep their own
//! token. And the real binary refuses to serve beyond loopback without a token unless told to.

mod common;

use std::io::{BufRead as _, Read as _};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{PATIENCE, Remote, TestApp, module, spawn_app};
use serde_json::{Value, json};

/// The two tokens the host accepts, as while one is rotated out.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ROTATED_IN: &str = "fresh-token_0123456789+/==";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

async fn guarded_app() -> TestApp {
    spawn_app(
        "default",
        &[
            "--api-token",
            TOKEN,
            "--api-token",
            ROTATED_IN,
            "--admin-token",
            ADMIN_TOKEN,
        ],
    )
    .await
}

/// The status, `WWW-Authenticate` and JSON body of `request`.
async fn send(request: reqwest::RequestBuilder) -> (u16, String, Value) {
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().expect("a JSON error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_accepted_token_the_api_answers_401() {
    let app = guarded_app().await;
    let task = json!({"name": "t", "duration": 0});

    let (status, challenge, body) = send(app.client.post(app.url("/api/tasks")).json(&task)).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.starts_with("Bearer"), "{challenge:?}");
    assert!(error_of(&body).contains("needs an API token"), "{body}");

    for token in ["wrong-token-0123456789", ADMIN_TOKEN] {
        let (status, challenge, body) = send(
            app.client
                .post(app.url("/api/tasks"))
                .bearer_auth(token)
                .json(&task),
        )
        .await;
        assert_eq!(status, 401, "{token}: {body}");
        assert!(challenge.contains("invalid_token"), "{challenge:?}");
        assert!(
            error_of(&body).contains("not one this host accepts"),
            "{body}"
        );
    }

    // Every /api route is behind the guard, the event streams too, whatever the path holds.
    for path in [
        "/api/tasks",
        "/api/tasks/no-such-pid",
        "/api/tasks/no-such-pid/logs",
        "/api/tasks/no-such-pid/events",
        "/api/events",
        "/api/names",
        "/api/workers",
        "/api/workers/default",
    ] {
        let (status, challenge, body) = send(app.client.get(app.url(path))).await;
        assert_eq!(status, 401, "GET {path}: {body}");
        assert!(challenge.starts_with("Bearer"), "GET {path}: {challenge:?}");
    }
    assert_eq!(app.host.totals().spawned, 0, "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_configured_token_opens_the_api() {
    let app = guarded_app().await;
    for token in [TOKEN, ROTATED_IN] {
        let remote = Remote::with_token(app.base.clone(), token);
        let response = remote.submit(json!({"name": "t", "duration": 0})).await;
        assert_eq!(response.status(), 202, "{token}");
        let body: Value = response.json().await.expect("JSON body");
        let pid = body["pid"].as_str().expect("pid");
        let (status, record) = remote.get(&format!("/api/tasks/{pid}")).await;
        assert_eq!(status, 200, "{record}");
        let (status, page) = remote.get("/api/tasks").await;
        assert_eq!(status, 200, "{page}");

        let stream = remote
            .client
            .get(remote.url("/api/events"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(stream.status(), 200);
        assert_eq!(
            stream.headers()["content-type"],
            "text/event-stream",
            "the stream is open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_the_document_stay_open() {
    let app = guarded_app().await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(metrics.status(), 200);
    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, document) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);

    // The document says what this host asks for.
    let schemes = &document["components"]["securitySchemes"];
    for scheme in ["api_token", "admin_token"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{schemes}");
    }
    let paths = &document["paths"];
    for (method, path) in [
        ("post", "/api/tasks"),
        ("get", "/api/events"),
        ("get", "/api/workers/{name}"),
        ("post", "/api/session"),
        ("get", "/"),
    ] {
        let operation = &paths[path][method];
        assert_eq!(
            operation["security"],
            json!([{"api_token": []}]),
            "{method} {path}"
        );
        assert!(
            operation["responses"].get("401").is_some(),
            "{method} {path}"
        );
    }
    for (method, path) in [("get", "/api/health"), ("get", "/metrics")] {
        assert!(
            paths[path][method].get("security").is_none(),
            "{method} {path}"
        );
    }
    assert_eq!(
        paths["/api/workers/{name}"]["put"]["security"],
        json!([{"admin_token": []}]),
        "an upload takes the admin token alone"
    );

    // An open host's document declares no requirement it does not enforce.
    let open = spawn_app("default", &[]).await;
    let (_, document) = open.get("/api/openapi.json").await;
    assert!(
        document["paths"]["/api/tasks"]["post"]
            .get("security")
            .is_none()
    );
    assert!(
        document["components"]["securitySchemes"]
            .get("api_token")
            .is_some()
    );
}

/// The `Set-Cookie` values of `response`.
fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().expect("ASCII").to_owned())
        .collect()
}

/// Signs in with `token` (and `extra` headers): the session cookie's `Set-Cookie` value.
async fn sign_in(app: &TestApp, token: &str, extra: &[(&str, &str)]) -> String {
    let mut request = app.client.post(app.url("/api/session")).bearer_auth(token);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let signed_in = request.send().await.expect("request sent");
    assert_eq!(signed_in.status(), 204);
    let cookies = set_cookies(&signed_in);
    assert!(
        cookies
            .iter()
            .any(|cookie| cookie.starts_with("http_spawn_token=;") && cookie.contains("Max-Age=0")),
        "the earlier version's cookie, which held the token, is cleared: {cookies:?}"
    );
    cookies
        .into_iter()
        .find(|cookie| cookie.contains("http_spawn_session="))
        .expect("a session cookie")
}

/// The `name=value` pair of a `Set-Cookie` value, as a browser sends it back.
fn pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("a name=value pair")
        .to_owned()
}

/// Issue #21, item 7: the dashboard signs a browser in with a session, not the token: a random
/// id that expires, is taken only from the host's own origin, and ends at sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_a_browser_in_with_a_session() {
    let app = guarded_app().await;

    let page = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(page.status(), 401, "no token: the sign-in page");
    assert!(page.headers().contains_key("www-authenticate"));
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("text/html")
    );
    let html = page.text().await.expect("a page");
    assert!(
        html.contains("/api/session") && html.contains("type=\"password\""),
        "{html}"
    );

    let (status, _, body) = send(app.client.post(app.url("/api/session"))).await;
    assert_eq!(status, 401, "no cookie without a token: {body}");

    let set_cookie = sign_in(&app, ROTATED_IN, &[]).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = pair(&set_cookie);
    assert!(cookie.starts_with("http_spawn_session=v1."), "{cookie}");
    assert!(
        !cookie.contains(ROTATED_IN),
        "the token never goes into the cookie"
    );
    let again = pair(&sign_in(&app, ROTATED_IN, &[]).await);
    assert_ne!(cookie, again, "each sign-in is a session of its own");

    // With the cookie alone, as a browser sends it: the page (with its sign-out button), the
    // API and its event stream.
    let page = app
        .client
        .get(app.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("a page");
    assert!(html.contains("EventSource(\"/api/events\")"));
    assert!(
        html.contains(r#"data-testid="sign-out" style="margin-left: auto">"#),
        "the sign-out button is shown"
    );
    let (status, _, body) = send(
        app.client
            .post(app.url("/api/tasks"))
            .header("cookie", &cookie)
            .header("origin", app.base.as_str())
            .json(&json!({"name": "from-the-dashboard", "duration": 0})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = send(
        app.client
            .get(app.url("/api/tasks"))
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stream = app
        .client
        .get(app.url("/api/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request sent");
    assert_eq!(stream.status(), 200, "an EventSource sends the cookie");
    drop(stream);

    // A page of another origin on the same name (another port: the same site, so the browser
    // sends the cookie) cannot use it, even to read.
    let (status, _, body) = send(
        app.client
            .get(app.url("/api/tasks"))
            .header("cookie", &cookie)
            .header("origin", "http://127.0.0.1:1")
            .header("sec-fetch-site", "same-site"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("another origin"), "{body}");

    // Signing out clears the cookies and ends the session; the other session lives on.
    let signed_out = app
        .client
        .delete(app.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request sent");
    assert_eq!(signed_out.status(), 204);
    let cleared = set_cookies(&signed_out);
    assert!(
        cleared
            .iter()
            .any(|value| value.starts_with("http_spawn_session=;") && value.contains("Max-Age=0")),
        "{cleared:?}"
    );
    let (status, _, body) = send(
        app.client
            .get(app.url("/api/tasks"))
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("signed out"), "{body}");
    let (status, _, body) = send(
        app.client
            .get(app.url("/api/tasks"))
            .header("cookie", &again),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The cookie of the earlier version, which held the token itself, and a forged session.
    for stale in [
        format!("http_spawn_token={ROTATED_IN}"),
        "http_spawn_session=v1.99999999999.00112233445566778899aabbccddeeff.00".to_owned(),
    ] {
        let (status, _, body) = send(
            app.client
                .get(app.url("/api/tasks"))
                .header("cookie", &stale),
        )
        .await;
        assert_eq!(status, 401, "{stale}");
        assert!(error_of(&body).contains("sign in again"), "{body}");
        let page = app
            .client
            .get(app.url("/"))
            .header("cookie", &stale)
            .send()
            .await
            .expect("request sent");
        assert_eq!(page.status(), 401);
    }

    // Behind a proxy that terminates HTTPS, the cookie is bound to the origin: `__Host-`,
    // `Secure`.
    let secure = sign_in(&app, TOKEN, &[("x-forwarded-proto", "https")]).await;
    assert!(
        secure.starts_with("__Host-http_spawn_session=v1.") && secure.contains("; Secure"),
        "{secure}"
    );
    let (status, _, body) = send(
        app.client
            .get(app.url("/api/tasks"))
            .header("cookie", pair(&secure)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A session lasts `--session-ttl`, then the browser is asked to sign in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expires() {
    let app = spawn_app("default", &["--api-token", TOKEN, "--session-ttl", "1s"]).await;
    let set_cookie = sign_in(&app, TOKEN, &[]).await;
    assert!(set_cookie.contains("Max-Age=1"), "{set_cookie}");
    let cookie = pair(&set_cookie);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _, body) = send(
            app.client
                .get(app.url("/api/tasks"))
                .header("cookie", &cookie),
        )
        .await;
        if status == 401 {
            assert!(error_of(&body).contains("expired"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "it never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoints_take_the_admin_token_alone() {
    let app = guarded_app().await;
    let rollback = |token: &'static str| {
        send(
            app.client
                .post(app.url("/api/workers/default/rollback"))
                .bearer_auth(token),
        )
    };
    let (status, _, body) = rollback(ADMIN_TOKEN).await;
    assert_eq!(status, 409, "past the guard: no previous version: {body}");
    let (status, _, body) = rollback(TOKEN).await;
    assert_eq!(status, 403, "an API token is not the admin token: {body}");
}

/// The real binary with `args`, its JSON log lines read on a thread; killed when dropped.
struct Binary {
    child: Child,
    lines: Receiver<String>,
}

impl Binary {
    fn command(args: &[&str]) -> Command {
        let cache = format!("{}/module-cache", env!("CARGO_TARGET_TMPDIR"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_http-spawn"));
        command
            .args([
                "--log-format",
                "json",
                "--capacity",
                "16",
                "--store",
                "memory",
            ])
            .args(["--cache-dir", &cache])
            .arg("--module")
            .arg(module("default"))
            .args(args)
            .env_remove("HTTP_SPAWN_API_TOKEN")
            .env_remove("HTTP_SPAWN_INSECURE_NO_AUTH")
            .env("RUST_LOG", "info");
        command
    }

    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The log lines up to and including "listening", and the port it listens on.
    fn wait_listening(&self) -> (Vec<Value>, u16) {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .expect("a log line in time");
            let line: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if line["message"] == "listening" {
                let address: std::net::SocketAddr = line["address"]
                    .as_str()
                    .and_then(|address| address.parse().ok())
                    .unwrap_or_else(|| panic!("an address: {line}"));
                seen.push(line);
                return (seen, address.port());
            }
            seen.push(line);
        }
    }

    /// The next log line, if one comes within `wait`.
    fn next_line(&self, wait: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(wait).ok()?;
        serde_json::from_str(&line).ok()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn beyond_loopback_without_a_token_the_binary_refuses_to_start() {
    let mut child = Binary::command(&["--listen", "0.0.0.0:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {PATIENCE:?}: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr readable");
    assert_eq!(status.code(), Some(2), "a configuration error: {stderr}");
    for words in ["0.0.0.0:0", "--api-token", "--insecure-no-auth"] {
        assert!(stderr.contains(words), "{words:?} not in {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_no_auth_serves_beyond_loopback_with_a_warning() {
    let host = Binary::start(Binary::command(&[
        "--listen",
        "0.0.0.0:0",
        "--insecure-no-auth",
    ]));
    let (mut lines, port) = host.wait_listening();
    // The warning comes right after "listening".
    let warned = |lines: &[Value]| {
        lines.iter().any(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("--insecure-no-auth"))
        })
    };
    while !warned(&lines) {
        let line = host
            .next_line(PATIENCE)
            .unwrap_or_else(|| panic!("no warning in {lines:?}"));
        lines.push(line);
    }
    let app = Remote::new(format!("http://127.0.0.1:{port}"));
    let (status, health) = app.get("/api/health").await;
    assert_eq!(status, 200, "{health}");
    app.spawn(json!({"name": "open", "duration": 0})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_variable_holds_several_tokens() {
    let mut command = Binary::command(&["--listen", "0.0.0.0:0"]);
    command.env("HTTP_SPAWN_API_TOKEN", format!("{TOKEN},{ROTATED_IN}"));
    let host = Binary::start(command);
    let (_, port) = host.wait_listening();
    let base = format!("http://127.0.0.1:{port}");
    for token in [TOKEN, ROTATED_IN] {
        let (status, page) = Remote::with_token(base.clone(), token)
            .get("/api/tasks")
            .await;
        assert_eq!(status, 200, "{token}: {page}");
    }
    let (status, body) = Remote::new(base).get("/api/tasks").await;
    assert_eq!(status, 401, "{body}");
}
