//! Webhook hooks: a POST of the event as JSON from the agent (not from the container,
//! so the environment's egress policy does not apply), answered 2xx within the hook's
//! timeout.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Outcome;

/// At most this many redirects are followed; a webhook is one call.
const MAX_REDIRECTS: usize = 3;

/// The JSON body: `{event, user, environment, agent, time}`.
#[derive(Debug, Serialize)]
pub struct Call<'a> {
    /// `create`, `start`, `login`, `logout`, `idle`, `stop`, `after` or `every`.
    pub event: &'a str,
    /// The student.
    pub user: &'a str,
    /// Their environment.
    pub environment: &'a str,
    /// This agent's name.
    pub agent: &'a str,
}

/// What is sent: the call and the time it was made (RFC 3339, UTC).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    call: &'a Call<'a>,
    time: String,
}

/// The agent's HTTP client (rustls, the platform's roots not needed: webpki's).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("labssh-agent/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
}

/// POSTs `call` to `url`, giving up after `timeout`.
pub async fn post(
    client: Option<&reqwest::Client>,
    url: &str,
    call: &Call<'_>,
    timeout: Duration,
) -> Outcome {
    let Some(client) = client else {
        return Outcome::Failed("the agent has no HTTP client".to_owned());
    };
    let body = Body {
        call,
        time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let sent = client.post(url).timeout(timeout).json(&body).send().await;
    match sent {
        Ok(answer) if answer.status().is_success() => Outcome::Ok,
        Ok(answer) => Outcome::Failed(format!("the webhook answered {}", answer.status())),
        Err(e) if e.is_timeout() => Outcome::TimedOut(timeout),
        Err(e) => Outcome::Failed(format!("the webhook could not be reached ({})", cause(&e))),
    }
}

/// The innermost cause of `e`: "connection refused" rather than "error sending request".
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_call_and_the_time() {
        let call = Call {
            event: "login",
            user: "alice",
            environment: "default",
            agent: "agent0",
        };
        let body = Body {
            call: &call,
            time: "2026-12-02T17:00:00Z".into(),
        };
        let json: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"event": "login", "user": "alice", "environment": "default",
                "agent": "agent0", "time": "2026-12-02T17:00:00Z"})
        );
    }

    #[tokio::test]
    async fn an_unreachable_webhook_fails_with_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let call = Call {
            event: "login",
            user: "alice",
            environment: "default",
            agent: "agent0",
        };
        let client = client().unwrap();
        let outcome = post(
            Some(&client),
            &format!("http://127.0.0.1:{port}/"),
            &call,
            Duration::from_secs(5),
        )
        .await;
        let Outcome::Failed(why) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(why.contains("could not be reached"), "{why}");
    }
}
