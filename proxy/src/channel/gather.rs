//! The `Gathering` phase: pty and env requests are answered until `shell`,
//! `exec` or `subsystem` forms the channel's one `Start`. The env allow-list
//! and the subsystem check run here and nowhere else in the proxy, and so
//! do a certificate's session restrictions (the login identity's
//! [`Restrictions`]): without `permit-pty` a `pty-req` is refused, and a
//! `force-command` replaces whatever the channel starts — shell, exec or
//! subsystem — with the command asked for (or the subsystem's name) in
//! `SSH_ORIGINAL_COMMAND`, as sshd does.
//!
//! What else arrives before the start (data, EOF, window changes, signals)
//! has no process to go to and is dropped; what arrives after it waits in the
//! queue for the relay.

use std::collections::HashMap;
use std::time::Duration;

use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};

use super::queue::{Inbox, Request};
use super::session::Session;
use super::set_env::{EnvRequests, Refusal};
use crate::auth::identity::Restrictions;
use crate::config::Config;

/// How long a channel may wait for its `shell`, `exec` or `subsystem` request.
/// Clients send it right after the channel opens; one that has not in this long
/// only holds a channel slot.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The one subsystem there is; the agent picks the image's `sftp-server` or
/// the built-in one.
const SFTP: &str = "sftp";
/// Where a forced command finds what the client asked for.
const ORIGINAL_COMMAND: &str = "SSH_ORIGINAL_COMMAND";
/// Where processes find the connection's forwarded agent (`ssh -A`).
const AUTH_SOCK: &str = "SSH_AUTH_SOCK";
/// Where X clients find the channel's forwarded display (`ssh -X`).
const DISPLAY: &str = "DISPLAY";

/// What the requests asked for, once one of them starts a process.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Gathered {
    /// The terminal, if the client asked for one.
    pub pty: Option<pb::PtyRequest>,
    /// The accepted `env` requests.
    pub env: HashMap<String, String>,
    /// The command of `exec`; empty for a shell or a subsystem.
    pub command: String,
    /// The subsystem's name; empty unless one was asked for.
    pub subsystem: String,
    /// The channel's X11 display and cookie (`ssh -X`).
    pub x11: Option<pb::X11Auth>,
}

impl Gathered {
    /// What the channel runs, for its `session` span.
    pub fn kind(&self) -> &'static str {
        if !self.subsystem.is_empty() {
            "subsystem"
        } else if self.command.is_empty() {
            "shell"
        } else {
            "exec"
        }
    }

    /// How lines the gateway writes end: a terminal wants a carriage return.
    pub fn newline(&self) -> &'static str {
        if self.pty.is_some() {
            "\r\n"
        } else {
            "\n"
        }
    }

    /// Points the process at the connection's agent socket, or, with none, makes
    /// sure the client did not name one of its own (the proxy's word, not the
    /// client's, as with `SSH_ORIGINAL_COMMAND`).
    pub fn agent_socket(&mut self, path: Option<&str>) {
        match path {
            Some(path) => self.env.insert(AUTH_SOCK.to_owned(), path.to_owned()),
            None => self.env.remove(AUTH_SOCK),
        };
    }

    /// Points X clients at the channel's display, `localhost:N.S` as sshd sets it,
    /// or, with none, makes sure the client did not name one. A subsystem (SFTP)
    /// runs no X client: its display, if any, is left unused.
    pub fn x11_display(&mut self, x11: Option<pb::X11Auth>) {
        match x11.filter(|_| self.subsystem.is_empty()) {
            Some(x11) => {
                let display = format!("localhost:{}.{}", x11.display, x11.screen);
                self.env.insert(DISPLAY.to_owned(), display);
                self.x11 = Some(x11);
            }
            None => {
                self.env.remove(DISPLAY);
                self.x11 = None;
            }
        }
    }

    /// The agent's start message for `user`; the environment comes with the
    /// placement.
    pub fn into_start(self, user: &str) -> pb::Start {
        pb::Start {
            user: user.to_owned(),
            environment: String::new(),
            command: self.command,
            argv: Vec::new(),
            subsystem: self.subsystem,
            env: self.env,
            pty: self.pty,
            x11: self.x11,
            // The identity is set by `start.rs` (issue 14).
            ..Default::default()
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// An `env` request; `log` is set for the channel's first refusal worth
    /// a log line.
    Env {
        /// Why.
        refusal: Refusal,
        /// Whether to log it.
        log: bool,
    },
    /// A subsystem other than `sftp`.
    Subsystem(String),
    /// A terminal, for a login whose certificate does not permit one.
    Pty,
}

/// How a request was answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Taken; gathering goes on.
    Taken,
    /// Refused; gathering goes on.
    Refused(Refused),
    /// This request starts the process: gathering is over.
    Start(Gathered),
}

/// The requests so far.
#[derive(Debug, Default)]
pub(crate) struct Gathering {
    /// What the `Start` will carry.
    gathered: Gathered,
    /// The count and log state of `env` requests.
    env_requests: EnvRequests,
    /// What the login may not do (its certificate's).
    restrictions: Restrictions,
}

impl Gathering {
    /// Gathering for a login restricted by `restrictions`.
    pub fn new(restrictions: Restrictions) -> Gathering {
        Gathering {
            restrictions,
            ..Gathering::default()
        }
    }

    /// Answers one request.
    pub fn request(&mut self, config: &Config, request: Request) -> Verdict {
        match request {
            Request::Pty(_) if self.restrictions.no_pty => Verdict::Refused(Refused::Pty),
            Request::Pty(pty) => {
                self.gathered.pty = Some(pty);
                Verdict::Taken
            }
            Request::Env { name, value } => match self.env_requests.offer(config, &name, &value) {
                Ok(()) => {
                    self.gathered.env.insert(name, value);
                    Verdict::Taken
                }
                Err(refusal) => Verdict::Refused(Refused::Env {
                    refusal,
                    log: self.env_requests.first_to_log(refusal),
                }),
            },
            Request::Shell => self.start(String::new(), String::new()),
            Request::Exec(command) => self.start(command, String::new()),
            // A forced command runs instead of any subsystem, as in sshd.
            Request::Subsystem(name) if self.restrictions.force_command.is_some() => {
                self.start(name, String::new())
            }
            Request::Subsystem(name) if name == SFTP => self.start(String::new(), name),
            Request::Subsystem(name) => Verdict::Refused(Refused::Subsystem(name)),
        }
    }

    /// The start of `command` (or `subsystem`), or of the forced command
    /// with the one asked for in `SSH_ORIGINAL_COMMAND` (set even when the
    /// client sent its own: the proxy's word, not the client's).
    fn start(&mut self, command: String, subsystem: String) -> Verdict {
        let mut gathered = std::mem::take(&mut self.gathered);
        match &self.restrictions.force_command {
            Some(forced) => {
                gathered.env.remove(ORIGINAL_COMMAND);
                if !command.is_empty() {
                    gathered.env.insert(ORIGINAL_COMMAND.to_owned(), command);
                }
                gathered.command = forced.clone();
                gathered.subsystem = String::new();
            }
            None => {
                gathered.command = command;
                gathered.subsystem = subsystem;
            }
        }
        Verdict::Start(gathered)
    }
}

/// Runs the phase: `None` when the channel closed first or gave up waiting
/// (then it is closed).
pub(crate) async fn run(session: &Session, inbox: &mut Inbox) -> Option<Gathered> {
    let (conn, channel) = (session.ctx.conn, session.id);
    let log = |refused: &Refused| match refused {
        Refused::Env { refusal, log: true } => tracing::warn!(
            conn,
            peer = %session.ctx.peer,
            ?channel,
            "env request refused ({refusal}); later ones on this channel are refused without a log line"
        ),
        Refused::Env { log: false, .. } => {}
        Refused::Subsystem(name) => {
            tracing::info!(conn, subsystem = name.as_str(), "unknown subsystem refused")
        }
        Refused::Pty => {
            tracing::info!(
                conn,
                "terminal refused: the certificate does not permit a pty"
            )
        }
    };
    let config = &session.ctx.shared.config;
    let gathering = Gathering::new(session.ctx.identity.restrictions.clone());
    match tokio::time::timeout(REQUEST_TIMEOUT, gather(gathering, inbox, config, log)).await {
        Ok(mut gathered) => {
            // Set by the connection before `auth-agent-req` was answered, so before
            // this channel's start request arrived.
            let agent_socket = session.ctx.agent_socket.get().map(String::as_str);
            if let Some(gathered) = &mut gathered {
                gathered.agent_socket(agent_socket);
                // Likewise set before this channel's `x11-req` was answered.
                let x11 = session
                    .ctx
                    .x11
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&channel);
                gathered.x11_display(x11);
            }
            gathered
        }
        Err(_) => {
            tracing::info!(
                conn,
                ?channel,
                "no shell, exec or subsystem request within {REQUEST_TIMEOUT:?}; channel closed"
            );
            telemetry::error(Component::Proxy, "channel_request_timeout");
            let _ = session.write.close().await;
            None
        }
    }
}

/// Answers requests from `inbox` until one starts a process; `None` when the
/// channel closed first.
async fn gather(
    mut gathering: Gathering,
    inbox: &mut Inbox,
    config: &Config,
    refused: impl Fn(&Refused),
) -> Option<Gathered> {
    loop {
        tokio::select! {
            // Inputs sent before a request are taken before it, so all that
            // came before the start is dropped and nothing that came after.
            biased;
            input = inbox.inputs.recv() => {
                input?;
            }
            pending = inbox.requests.recv() => {
                let (request, reply) = pending?;
                match gathering.request(config, request) {
                    Verdict::Taken => {
                        let _ = reply.send(true);
                    }
                    Verdict::Refused(why) => {
                        refused(&why);
                        let _ = reply.send(false);
                    }
                    Verdict::Start(gathered) => {
                        let _ = reply.send(true);
                        return Some(gathered);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::super::queue::{queues, Input, Sender};
    use super::*;

    fn pty() -> pb::PtyRequest {
        pb::PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            width_px: 0,
            height_px: 0,
        }
    }

    fn env(name: &str, value: &str) -> Request {
        Request::Env {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn pty_then_env_then_exec_is_one_start_with_them() {
        let config = Config::default();
        let mut g = Gathering::default();
        assert_eq!(g.request(&config, Request::Pty(pty())), Verdict::Taken);
        assert_eq!(g.request(&config, env("LANG", "C.UTF-8")), Verdict::Taken);
        assert_eq!(
            g.request(&config, env("LD_PRELOAD", "/evil.so")),
            Verdict::Refused(Refused::Env {
                refusal: Refusal::NotAccepted,
                log: false
            })
        );
        let Verdict::Start(gathered) = g.request(&config, Request::Exec("ls -l".into())) else {
            panic!("exec starts the process");
        };
        assert_eq!(gathered.kind(), "exec");
        assert_eq!(gathered.newline(), "\r\n");
        let start = gathered.into_start("alice");
        assert_eq!(start.user, "alice");
        assert_eq!(start.command, "ls -l");
        assert_eq!(start.pty, Some(pty()));
        assert_eq!(
            start.env,
            HashMap::from([("LANG".to_owned(), "C.UTF-8".to_owned())])
        );
        assert!(start.subsystem.is_empty());
    }

    #[test]
    fn the_display_is_the_proxys_word_and_not_a_subsystems() {
        let x11 = pb::X11Auth {
            display: 10,
            screen: 0,
            protocol: "MIT-MAGIC-COOKIE-1".into(),
            cookie: "00ff".into(),
        };
        let mut gathered = Gathered::default();
        gathered.env.insert("DISPLAY".into(), ":0".into());
        gathered.x11_display(None);
        assert_eq!(gathered.env.get("DISPLAY"), None);
        gathered.x11_display(Some(x11.clone()));
        assert_eq!(gathered.env["DISPLAY"], "localhost:10.0");
        assert_eq!(gathered.into_start("alice").x11, Some(x11.clone()));
        let mut sftp = Gathered {
            subsystem: "sftp".into(),
            ..Default::default()
        };
        sftp.x11_display(Some(x11));
        assert_eq!(sftp.env.get("DISPLAY"), None);
        assert_eq!(sftp.into_start("alice").x11, None);
    }

    #[test]
    fn the_agent_socket_is_the_proxys_word() {
        let config = Config::default();
        let mut g = Gathering::default();
        // Whatever the allow-list says, the client's own value never stands.
        g.request(&config, env(AUTH_SOCK, "/tmp/evil"));
        let Verdict::Start(mut gathered) = g.request(&config, Request::Shell) else {
            panic!("shell starts");
        };
        gathered.agent_socket(Some("/tmp/labssh-agent.1.sock"));
        assert_eq!(
            gathered.env.get(AUTH_SOCK).map(String::as_str),
            Some("/tmp/labssh-agent.1.sock")
        );
        gathered.agent_socket(None);
        assert_eq!(gathered.env.get(AUTH_SOCK), None);
    }

    #[test]
    fn only_sftp_is_a_subsystem() {
        let config = Config::default();
        let mut g = Gathering::default();
        assert_eq!(
            g.request(&config, Request::Subsystem("x11".into())),
            Verdict::Refused(Refused::Subsystem("x11".into()))
        );
        let Verdict::Start(gathered) = g.request(&config, Request::Subsystem("sftp".into())) else {
            panic!("sftp starts");
        };
        assert_eq!(gathered.kind(), "subsystem");
        assert_eq!(gathered.newline(), "\n");
        let Verdict::Start(shell) = Gathering::default().request(&config, Request::Shell) else {
            panic!("shell starts");
        };
        assert_eq!(shell.kind(), "shell");
    }

    #[test]
    fn a_forced_command_replaces_every_start() {
        let config = Config::default();
        let forced = || {
            Gathering::new(Restrictions {
                force_command: Some("echo forced".into()),
                ..Restrictions::default()
            })
        };
        for (request, original) in [
            (Request::Exec("rm -rf ~".into()), Some("rm -rf ~")),
            (Request::Shell, None),
            (Request::Subsystem("sftp".into()), Some("sftp")),
            (Request::Subsystem("x11".into()), Some("x11")),
        ] {
            let mut g = forced();
            // The client cannot choose what the forced command reads,
            // whatever the env allow-list says.
            g.request(&config, env(ORIGINAL_COMMAND, "lie"));
            let Verdict::Start(gathered) = g.request(&config, request) else {
                panic!("starts");
            };
            assert_eq!(gathered.kind(), "exec");
            let start = gathered.into_start("alice");
            assert_eq!(start.command, "echo forced");
            assert!(start.subsystem.is_empty());
            assert_eq!(
                start.env.get(ORIGINAL_COMMAND).map(String::as_str),
                original
            );
        }
    }

    #[test]
    fn no_pty_refuses_the_terminal_only() {
        let config = Config::default();
        let mut g = Gathering::new(Restrictions {
            no_pty: true,
            ..Restrictions::default()
        });
        assert_eq!(
            g.request(&config, Request::Pty(pty())),
            Verdict::Refused(Refused::Pty)
        );
        let Verdict::Start(gathered) = g.request(&config, Request::Shell) else {
            panic!("a shell without a terminal");
        };
        assert_eq!(gathered.pty, None);
    }

    #[test]
    fn env_refusals_for_size_are_logged_once() {
        let config = Config::default();
        let mut g = Gathering::default();
        let big = "v".repeat(super::super::set_env::MAX_VALUE_BYTES + 1);
        for log in [true, false] {
            assert_eq!(
                g.request(&config, env("LANG", &big)),
                Verdict::Refused(Refused::Env {
                    refusal: Refusal::ValueTooLong,
                    log
                })
            );
        }
    }

    /// Sends `request` and returns how it was answered, once it is.
    fn ask(sender: &Sender, request: Request) -> oneshot::Receiver<bool> {
        let (reply, answer) = oneshot::channel();
        sender.request(request, reply);
        answer
    }

    #[tokio::test]
    async fn what_comes_before_the_start_is_dropped_and_what_follows_waits() {
        let config = Config::default();
        let (sender, mut inbox) = queues();
        // Before exec: data, EOF, a window change and a signal go nowhere.
        sender
            .input(Input::Data(Bytes::from_static(b"early")))
            .await;
        sender.input(Input::Eof).await;
        let size = pb::WindowSize {
            cols: 100,
            rows: 30,
            width_px: 0,
            height_px: 0,
        };
        sender.input(Input::WindowChange(size)).await;
        sender.input(Input::Signal("INT".into())).await;
        let pty_answer = ask(&sender, Request::Pty(pty()));
        let exec_answer = ask(&sender, Request::Exec("cat".into()));
        let gathered = gather(Gathering::default(), &mut inbox, &config, |_| {})
            .await
            .unwrap();
        assert_eq!(gathered.command, "cat");
        assert!(pty_answer.await.unwrap());
        assert!(exec_answer.await.unwrap());
        assert!(
            inbox.inputs.try_recv().is_err(),
            "nothing from before the start is left"
        );
        // After exec (the client has its answer): kept in order for the relay.
        sender.input(Input::WindowChange(size)).await;
        sender.input(Input::Data(Bytes::from_static(b"late"))).await;
        assert_eq!(inbox.inputs.recv().await, Some(Input::WindowChange(size)));
        assert_eq!(
            inbox.inputs.recv().await,
            Some(Input::Data(Bytes::from_static(b"late")))
        );
    }

    #[tokio::test]
    async fn refusals_are_answered_and_gathering_goes_on() {
        let config = Config::default();
        let (sender, mut inbox) = queues();
        let refused = ask(&sender, Request::Subsystem("nope".into()));
        let started = ask(&sender, Request::Shell);
        let seen = std::sync::Mutex::new(Vec::new());
        let gathered = gather(Gathering::default(), &mut inbox, &config, |why| {
            seen.lock().unwrap().push(format!("{why:?}"))
        })
        .await
        .unwrap();
        assert_eq!(gathered.kind(), "shell");
        assert!(!refused.await.unwrap());
        assert!(started.await.unwrap());
        assert_eq!(seen.into_inner().unwrap(), ["Subsystem(\"nope\")"]);
    }

    #[tokio::test]
    async fn a_channel_closed_before_its_start_starts_nothing() {
        let config = Config::default();
        let (sender, mut inbox) = queues();
        sender.input(Input::Data(Bytes::from_static(b"x"))).await;
        drop(sender);
        assert_eq!(
            gather(Gathering::default(), &mut inbox, &config, |_| {}).await,
            None
        );
    }
}
