//! A browser for the web front door's tests: the real curl, one cookie jar per
//! browser, the front door's certificate trusted and its names pointed at loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Lab, WEB_DOMAIN};

/// One browser: its own cookie jar.
pub struct Browser {
    jar: PathBuf,
    cacert: PathBuf,
    /// The loopback address it connects from (`curl --interface`), if not 127.0.0.1.
    from: Option<String>,
}

/// One answer: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Browser {
    /// A browser with an empty jar named `name` in the lab's directory.
    pub fn new(lab: &Lab, name: &str) -> Browser {
        let dir = lab.dir.path();
        Browser {
            jar: dir.join(format!("{name}.cookies")),
            cacert: dir.join("web.crt"),
            from: None,
        }
    }

    /// The same browser connecting from another loopback address (`127.0.0.2`), as
    /// a student's machine is not the balancer's.
    pub fn connecting_from(mut self, address: &str) -> Browser {
        self.from = Some(address.to_owned());
        self
    }

    /// `curl` to `https://HOST:PORT/PATH` (HOST `lab.test` or a service's
    /// `NAME.lab.test`) with the jar, and `args` (`-d`, `-H`, …); redirects not
    /// followed.
    pub async fn get(&self, host: &str, port: u16, path: &str, args: &[&str]) -> Answer {
        self.try_get(host, port, path, args)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Browser::get`], or why curl got no answer (the connection closed).
    pub async fn try_get(
        &self,
        host: &str,
        port: u16,
        path: &str,
        args: &[&str],
    ) -> Result<Answer, String> {
        let url = format!("https://{host}:{port}{path}");
        let out = self
            .curl(host, port)
            .args(["-i", "--max-time", "60", "-c"])
            .arg(&self.jar)
            .args(args)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("curl runs (apt-get install curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "curl {url} failed: {}{text}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line from {url}: {text}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        })
    }

    /// `curl -N` to `https://HOST:PORT/PATH` with the jar, left running: its body
    /// on stdout as it comes. Killed when dropped.
    pub fn open(&self, host: &str, port: u16, path: &str) -> tokio::process::Child {
        self.curl(host, port)
            .args(["-N", "--max-time", "120"])
            .arg(format!("https://{host}:{port}{path}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs (apt-get install curl)")
    }

    /// Quiet curl from this browser's address, trusting the front door's certificate,
    /// `HOST` pointed at loopback, sending the jar's cookies.
    fn curl(&self, host: &str, port: u16) -> tokio::process::Command {
        let mut curl = tokio::process::Command::new("curl");
        if let Some(from) = &self.from {
            curl.args(["--interface", from]);
        }
        curl.arg("-s")
            .arg("--cacert")
            .arg(&self.cacert)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg("-b")
            .arg(&self.jar);
        curl
    }

    /// Logs in on the front door at `port` as `user` with `password`: the form, its
    /// token, the post. The answer to the post.
    pub async fn log_in(&self, port: u16, user: &str, password: &str) -> Answer {
        let form = self.get(WEB_DOMAIN, port, "/login", &[]).await;
        assert_eq!(form.status, 200, "{form:?}");
        let token = form
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no csrf field in {}", form.body))
            .to_owned();
        let fields = [
            format!("user={user}"),
            format!("password={password}"),
            format!("csrf={token}"),
            "next=/".to_owned(),
        ];
        let mut args = Vec::new();
        for f in &fields {
            args.extend(["--data-urlencode", f.as_str()]);
        }
        self.get(WEB_DOMAIN, port, "/login", &args).await
    }
}

/// Serves `page` and a CGI printing its environment on 8080 from the container
/// `login` (`bob`, `bob+course`) logs into, and waits until the registry lists
/// `8080-USER[-ENV]`.
pub async fn serve_page(lab: &Lab, login: &str, page: &str) {
    let (user, env) = login
        .split_once('+')
        .map_or((login, None), |(u, e)| (u, Some(e)));
    let auth = if user == "alice" {
        Lab::alice()
    } else {
        Lab::bob()
    };
    let script = format!(
        "mkdir -p ~/www/cgi-bin && echo {page} > ~/www/index.html && \
         printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > ~/www/cgi-bin/env && \
         chmod +x ~/www/cgi-bin/env && httpd -p 8080 -h ~/www"
    );
    let out = lab.ssh.run(login, &auth, &[&script]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let name = match env {
        Some(env) => format!("8080-{user}-{env}"),
        None => format!("8080-{user}"),
    };
    wait_listed(lab, &[&name], Duration::from_secs(30)).await;
}

/// Waits until the registry lists every service of `names`, for at most `within`.
pub async fn wait_listed(lab: &Lab, names: &[&str], within: Duration) {
    let mut controller = lab.cluster.as_ref().unwrap().controller_client().unwrap();
    let deadline = Instant::now() + within;
    loop {
        let listed = controller
            .list_services(labssh_proto::pb::ListServicesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let found: Vec<&str> = listed.services.iter().map(|s| s.name.as_str()).collect();
        if names.iter().all(|n| found.contains(n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{names:?} never listed: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
