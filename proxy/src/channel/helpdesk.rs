//! The student's self-service login, `ssh alice+@lab [COMMAND]`: the proxy answers
//! it itself, with no container involved, so a student whose container is broken
//! can still see and mend it.
//!
//! ```text
//! ssh alice+@lab               the environments open to her, her containers' state, and this help
//! ssh alice+@lab stop [ENV]    stop her container (files kept; the next login starts it)
//! ssh alice+@lab start [ENV]   start it now
//! ssh alice+@lab reset [ENV]   make it anew from its image: a fresh root, the home kept
//! ssh alice+@lab services      the services listening in her running containers
//! ssh alice+@lab share NAME    open one of them to anyone through the web front door
//! ssh alice+@lab unshare NAME  and close it again
//! ```
//!
//! The actions go to the controller under the proxy's role, which it allows for the
//! proxy's own student only, and never a removal; the container's sessions end
//! first, each told why.

use std::time::Duration;

use bytes::Bytes;
use labssh_proto::pb;
use pb::ContainerVerb as Verb;

use super::close::Closing;
use super::gather::Gathered;
use super::session::Session;

/// Exit status of a command the helpdesk does not know, or one that failed.
const FAILED: u32 = 1;
/// The controller's answer to an action may take a while: a reset waits for the
/// sessions to let go and starts a new container.
const ACTION_TIMEOUT: Duration = Duration::from_secs(180);

/// What the student asked for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// The listing and this help.
    Status,
    /// An action on one environment's container (empty: the default one).
    Act(Verb, String),
    /// The services listening in the student's containers.
    Services,
    /// Make one of the student's services public (true) or private again.
    Share(String, bool),
    /// Something else: say what is possible.
    Unknown(String),
}

/// Parses the command line of `ssh alice+@lab COMMAND`.
fn parse(command: &str) -> Command {
    let words: Vec<&str> = command.split_whitespace().collect();
    let verb = match words.first().copied() {
        None | Some("status" | "list" | "help" | "--help") => return Command::Status,
        Some("services") if words.len() == 1 => return Command::Services,
        Some(verb @ ("share" | "unshare")) => {
            return match words.as_slice() {
                [_, name] => Command::Share((*name).to_owned(), verb == "share"),
                _ => Command::Unknown(command.trim().to_owned()),
            }
        }
        Some("stop") => Verb::Stop,
        Some("start") => Verb::Start,
        Some("reset") => Verb::Reset,
        Some(_) => return Command::Unknown(command.trim().to_owned()),
    };
    match words.as_slice() {
        [_] => Command::Act(verb, String::new()),
        [_, env] if crate::login_name::valid_environment(env) => {
            Command::Act(verb, (*env).to_owned())
        }
        _ => Command::Unknown(command.trim().to_owned()),
    }
}

/// The help text, with the student's login name.
fn help(user: &str) -> String {
    format!(
        "commands (ENV: an environment above; the default one if none):\n  ssh {user}+@HOST services      the services listening in your running containers, and how to reach them\n  ssh {user}+@HOST share NAME    let anyone open your service NAME (e.g. 8080-{user}) in the browser; unshare NAME ends it\n  ssh {user}+@HOST stop [ENV]    stop your container (your files are kept; your next login starts it)\n  ssh {user}+@HOST start [ENV]   start it now\n  ssh {user}+@HOST reset [ENV]   make it anew from its image: files outside your home are lost, your home is kept\n"
    )
}

/// Answers the channel: the student's listing, or an action's outcome.
pub(crate) async fn run(session: &Session, gathered: Gathered) -> Closing {
    let newline = gathered.newline();
    let ctx = &session.ctx;
    if ctx.identity.restrictions.force_command.is_some() {
        return refuse("this certificate runs only its forced command", newline);
    }
    if !gathered.subsystem.is_empty() {
        return refuse(
            &format!(
                "the self-service login has no {} subsystem; log in as {} for your files",
                gathered.subsystem, ctx.login.user
            ),
            newline,
        );
    }
    let (text, status) = match parse(&gathered.command) {
        Command::Status => match listing(session).await {
            Ok(text) => (text, 0),
            Err(message) => return refuse(&message, newline),
        },
        Command::Services => match services(session).await {
            Ok(text) => (text, 0),
            Err(message) => return refuse(&message, newline),
        },
        Command::Share(name, public) => match share(session, &name, public).await {
            Ok(line) => (format!("{line}\n"), 0),
            Err(message) => return refuse(&message, newline),
        },
        Command::Act(verb, env) => match act(session, verb, env).await {
            Ok(line) => (format!("{line}\n"), 0),
            Err(message) => return refuse(&message, newline),
        },
        Command::Unknown(what) => {
            let text = format!(
                "labssh: unknown command {what:?}\n{}",
                help(&ctx.login.user)
            );
            let text = Bytes::from(text.replace('\n', newline));
            let _ = session.write.extended_data_bytes(1, text).await;
            return Closing::Answered { status: FAILED };
        }
    };
    let text = text.replace('\n', newline);
    let _ = session.write.data_bytes(Bytes::from(text)).await;
    Closing::Answered { status }
}

fn refuse(message: &str, newline: &'static str) -> Closing {
    Closing::NotStarted {
        message: message.to_owned(),
        newline,
    }
}

/// The environments open to the student, their containers' state, and the help.
async fn listing(session: &Session) -> Result<String, String> {
    let ctx = &session.ctx;
    let user = ctx.login.user.clone();
    let mut controller = ctx.shared.upstream.controller();
    let timeout = Duration::from_secs(ctx.shared.config.controller_timeout_secs);
    let environments = tokio::time::timeout(
        timeout,
        controller.list_environments(pb::ListEnvironmentsRequest {}),
    );
    let environments = match environments.await {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => return Err(unavailable(&status)),
        Err(_) => return Err("the controller did not answer; try again in a minute".into()),
    };
    let request = pb::ListContainersRequest {
        user: user.clone(),
        ..Default::default()
    };
    let containers = match tokio::time::timeout(timeout, controller.list_containers(request)).await
    {
        Ok(Ok(reply)) => reply.into_inner().containers,
        Ok(Err(status)) => return Err(unavailable(&status)),
        Err(_) => return Err("the controller did not answer; try again in a minute".into()),
    };
    let groups = &ctx.identity.groups;
    let mut text = format!(
        "{:<16} {:<10} {}\n",
        "ENVIRONMENT", "CONTAINER", "DESCRIPTION"
    );
    for env in &environments.environments {
        let open =
            env.allowed_groups.is_empty() || env.allowed_groups.iter().any(|g| groups.contains(g));
        let container = containers
            .iter()
            .filter_map(|p| p.container.as_ref())
            .find(|c| c.environment == env.name);
        if !open && container.is_none() {
            continue;
        }
        let state = match container {
            None => "none".to_owned(),
            Some(c) => c.state().word(),
        };
        let name = match env.name == environments.default_environment {
            true => format!("{} (default)", env.name),
            false => env.name.clone(),
        };
        text += &format!("{name:<16} {state:<10} {}\n", env.description);
    }
    text += &help(&user);
    Ok(text)
}

/// Shares or unshares one of the student's services.
async fn share(session: &Session, name: &str, public: bool) -> Result<String, String> {
    let ctx = &session.ctx;
    let user = &ctx.login.user;
    if !labssh_proto::services::could_be_of(name, user) {
        return Err(format!(
            "{name:?} is not a name of your services: PORT-{user} or PORT-{user}-ENV (ssh {user}+@HOST services lists them)"
        ));
    }
    let redis = ctx.shared.redis.as_deref();
    let domain = &ctx.shared.config.web.domain;
    let line = if public {
        crate::shares::share(redis, user, name).await?;
        format!("{name} is public: anyone may open https://{name}.{domain}/ (ssh {user}+@HOST unshare {name} ends it)")
    } else if crate::shares::unshare(redis, user, name).await? {
        format!("{name} is private again")
    } else {
        format!("{name} was not shared")
    };
    ctx.shared.audit.record(
        if public {
            "service_share"
        } else {
            "service_unshare"
        },
        serde_json::json!({"conn": ctx.conn, "client": ctx.peer, "user": user, "service": name}),
    );
    Ok(line)
}

/// The services listening in the student's running containers, each with the
/// `ssh -L` that reaches it.
async fn services(session: &Session) -> Result<String, String> {
    let ctx = &session.ctx;
    let user = &ctx.login.user;
    let request = pb::ListServicesRequest {
        user: user.clone(),
        ..Default::default()
    };
    let mut controller = ctx.shared.upstream.controller();
    let timeout = Duration::from_secs(ctx.shared.config.controller_timeout_secs);
    let services = match tokio::time::timeout(timeout, controller.list_services(request)).await {
        Ok(Ok(reply)) => reply.into_inner().services,
        Ok(Err(status)) => return Err(unavailable(&status)),
        Err(_) => return Err("the controller did not answer; try again in a minute".into()),
    };
    let mut text = services_text(user, &services);
    if let Ok(shared) = crate::shares::shared_by(ctx.shared.redis.as_deref(), user).await {
        if !shared.is_empty() {
            text += &format!(
                "public (anyone may open them in the browser): {}\n",
                shared.join(", ")
            );
        }
    }
    Ok(text)
}

/// The student's services as a table, with the forward reaching each.
fn services_text(user: &str, services: &[pb::ServiceInfo]) -> String {
    if services.is_empty() {
        return "nothing listens in your running containers (a server you start, e.g. `python3 -m http.server 8000`, shows here within a few seconds)\n".to_owned();
    }
    let mut text = format!(
        "{:<28} {:<12} {:<6} {:<10} {}\n",
        "SERVICE", "ENVIRONMENT", "PORT", "NAME", "REACH IT WITH"
    );
    for s in services {
        // A service of the default environment is named without it.
        let login = match s.name == format!("{}-{user}", s.port) {
            true => user.to_owned(),
            false => format!("{user}+{}", s.environment),
        };
        let host = match s.local {
            true => "localhost".to_owned(),
            false => s.addresses.first().cloned().unwrap_or_default(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        text += &format!(
            "{:<28} {:<12} {:<6} {:<10} ssh -L {port}:{host}:{port} {login}@HOST\n",
            s.name,
            s.environment,
            s.port,
            s.label,
            port = s.port,
        );
    }
    text
}

/// Asks the controller to act on the student's container of `environment`.
async fn act(session: &Session, verb: Verb, environment: String) -> Result<String, String> {
    let ctx = &session.ctx;
    let request = pb::ContainerActionRequest {
        user: ctx.login.user.clone(),
        environment: environment.clone(),
        verb: verb.into(),
        remove_home: false,
        // Taken at its word only without mTLS; with it, the proxy's role says so.
        by: "student".to_owned(),
    };
    let mut controller = ctx.shared.upstream.controller();
    let reply = tokio::time::timeout(ACTION_TIMEOUT, controller.container_action(request)).await;
    let reply = match reply {
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(status)) => return Err(unavailable(&status)),
        Err(_) => {
            return Err(format!(
            "the controller did not answer in time; `ssh {}+@HOST` shows your container's state",
            ctx.login.user
        ))
        }
    };
    ctx.shared.audit.record(
        "container_action",
        serde_json::json!({
            "conn": ctx.conn,
            "client": ctx.peer,
            "user": ctx.login.user,
            "environment": environment,
            "container": reply.container,
            "agent": reply.agent,
            "action": verb.word(),
            "by": "student",
        }),
    );
    let what = match verb {
        Verb::Stop => "stopped: your files are kept, and your next login starts it",
        Verb::Start => "running",
        Verb::Reset => "made anew from its image: your home is kept",
        Verb::Remove | Verb::Unspecified => "done",
    };
    let ended = match reply.sessions_ended {
        0 => String::new(),
        n => format!(" ({n} open session(s) ended)"),
    };
    Ok(format!(
        "your container {} is {what}{ended}",
        reply.container
    ))
}

/// What the student reads for the controller's refusal.
fn unavailable(status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::NotFound => format!("{}; it is made at your next login", status.message()),
        tonic::Code::Unavailable if status.message().contains("tcp connect") => {
            "the login service is unavailable; try again in a minute".to_owned()
        }
        _ => status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_anything_else_is_named() {
        assert_eq!(parse(""), Command::Status);
        assert_eq!(parse("help"), Command::Status);
        assert_eq!(parse("list"), Command::Status);
        assert_eq!(parse("stop"), Command::Act(Verb::Stop, String::new()));
        assert_eq!(
            parse(" reset  gpu "),
            Command::Act(Verb::Reset, "gpu".into())
        );
        assert_eq!(
            parse("start default"),
            Command::Act(Verb::Start, "default".into())
        );
        assert_eq!(parse("remove"), Command::Unknown("remove".into()));
        assert_eq!(
            parse("reset ../bob"),
            Command::Unknown("reset ../bob".into())
        );
        assert_eq!(parse("stop a b"), Command::Unknown("stop a b".into()));
        assert_eq!(parse("services"), Command::Services);
        assert_eq!(
            parse("services bob"),
            Command::Unknown("services bob".into())
        );
        assert_eq!(
            parse("share 8080-alice"),
            Command::Share("8080-alice".into(), true)
        );
        assert_eq!(
            parse("unshare 8080-alice"),
            Command::Share("8080-alice".into(), false)
        );
        assert_eq!(parse("share"), Command::Unknown("share".into()));
    }

    #[test]
    fn services_say_how_to_reach_them() {
        let service =
            |name: &str, env: &str, port: u32, addresses: &[&str], local: bool| pb::ServiceInfo {
                name: name.into(),
                user: "alice".into(),
                environment: env.into(),
                port,
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                local,
                ..Default::default()
            };
        let text = services_text(
            "alice",
            &[
                service("8888-alice", "default", 8888, &["0.0.0.0"], true),
                service("3000-alice-web", "web", 3000, &["172.17.0.5"], false),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].ends_with("ssh -L 8888:localhost:8888 alice@HOST"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("ssh -L 3000:172.17.0.5:3000 alice+web@HOST"),
            "{text}"
        );
        assert!(services_text("alice", &[]).starts_with("nothing listens"));
    }
}
