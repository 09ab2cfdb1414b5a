//! The HTTP client the subcommands share: the host's address and tokens, and every failure as
//! one line with the host's own message.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// Whatever stops a subcommand: said in one line, with the exit code to leave with.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl Failure {
    /// A failure that exits 1.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

/// Which token a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The API token.
    Api,
    /// The admin token (the API token if none was given: a host without an admin token
    /// refuses admin requests whatever they carry).
    Admin,
}

/// A host's API, as `--url`, `--token` and `--admin-token` name it.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    admin_token: Option<String>,
}

/// How long an answer that does not wait for a task may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(
        url: &str,
        token: Option<String>,
        admin_token: Option<String>,
    ) -> Result<Self, Failure> {
        let base = url.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base) {
            Ok(parsed) if parsed.scheme() == "http" => {}
            Ok(parsed) => {
                return Err(Failure::new(format!(
                    "--url {url}: only http:// is supported (not {}://); put a TLS proxy's \
                     plain side, or the host's own address, here",
                    parsed.scheme()
                )));
            }
            Err(error) => return Err(Failure::new(format!("--url {url}: {error}"))),
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| Failure::new(format!("starting the HTTP client: {error}")))?;
        Ok(Self {
            http,
            base,
            token: token.filter(|token| !token.is_empty()),
            admin_token: admin_token.filter(|token| !token.is_empty()),
        })
    }

    /// A request to `path` (from `/api/...`), with its token; `None` for no timeout (a
    /// stream, a wait bounded by the host).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        auth: Auth,
        timeout: Option<Duration>,
    ) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        let token = match auth {
            Auth::Admin => self.admin_token.as_ref().or(self.token.as_ref()),
            Auth::Api => self.token.as_ref(),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        request
    }

    /// Sends `request`: its answer if the host gave a 2xx, else the host's message.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, Failure> {
        let answer = request
            .send()
            .await
            .map_err(|error| self.unreached(&error))?;
        if answer.status().is_success() {
            return Ok(answer);
        }
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        Err(Failure::new(refusal(status, &body)))
    }

    /// `method path` with `body` (JSON) if any: the status and the JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
    ) -> Result<(StatusCode, Value), Failure> {
        self.json_within(method, path, body, auth, ANSWER_TIMEOUT)
            .await
    }

    /// As [`Client::json`], waiting up to `timeout` for the answer.
    pub async fn json_within(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        auth: Auth,
        timeout: Duration,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut request = self.request(method, path, auth, Some(timeout));
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = self.send(request).await?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|error| Failure::new(format!("reading the answer: {error}")))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// The failure to reach the host at all, in one line.
    pub fn unreached(&self, error: &reqwest::Error) -> Failure {
        let why = if error.is_timeout() {
            "no answer in time".to_owned()
        } else if error.is_connect() {
            "cannot connect (is a host running there? see --url or HTTP_SPAWN_URL)".to_owned()
        } else {
            // The innermost cause says what happened.
            let mut source: &dyn std::error::Error = error;
            while let Some(inner) = source.source() {
                source = inner;
            }
            source.to_string()
        };
        Failure::new(format!("{}: {why}", self.base))
    }
}

/// The host's refusal in one line: its status and its JSON `error`, or its text.
pub fn refusal(status: StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| value["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(300).collect());
    if message.is_empty() {
        format!("{status}")
    } else {
        format!("{}: {message}", status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_line_with_the_hosts_message() {
        assert_eq!(
            refusal(StatusCode::NOT_FOUND, r#"{"error":"no task 1-2"}"#),
            "404: no task 1-2"
        );
        assert_eq!(
            refusal(StatusCode::BAD_GATEWAY, "upstream down\n"),
            "502: upstream down"
        );
        assert_eq!(
            refusal(StatusCode::SERVICE_UNAVAILABLE, ""),
            "503 Service Unavailable"
        );
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(Client::new("http://127.0.0.1:8080/", None, None).is_ok());
        let refused = Client::new("https://example.com", None, None).expect_err("https");
        assert!(
            refused.message.contains("only http://"),
            "{}",
            refused.message
        );
        assert!(Client::new("not a url", None, None).is_err());
    }
}
