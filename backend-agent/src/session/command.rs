//! What a session runs: a subsystem's server, the client's command, or a login shell,
//! with the terminal and environment the client asked for.

use labssh_proto::pb;

use super::refusal::SessionError;
use super::relay::clamp;
use crate::backend::docker::{INIT_PATH, SFTP_SERVER_PATH};
use crate::backend::{self, PtySpec, SharedBackend, SpawnSpec};

/// Where OpenSSH's sftp-server lives in the common distributions.
const SFTP_SERVERS: [&str; 5] = [
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
];

/// How to start the process `start` asks for in `container` of `env`: the subsystem's
/// server, else `argv`, else the command through the shell, else a login shell.
pub async fn spec(
    backend: &SharedBackend,
    container: &str,
    start: &pb::Start,
    env: &pb::Environment,
) -> Result<SpawnSpec, SessionError> {
    let shell = backend::shell(env).to_owned();
    let argv = if !start.subsystem.is_empty() {
        subsystem_argv(backend, container, &start.subsystem).await?
    } else if !start.argv.is_empty() {
        start.argv.clone()
    } else if !start.command.is_empty() {
        vec![shell, "-c".to_owned(), start.command.clone()]
    } else {
        vec![shell, "-l".to_owned()]
    };
    let argv = match &start.x11 {
        Some(x11) => with_xauth(backend, container, x11, argv).await,
        None => argv,
    };
    let pty = start.pty.as_ref().map(|p| PtySpec {
        term: p.term.clone(),
        cols: clamp(p.cols),
        rows: clamp(p.rows),
    });
    let mut extra_env: Vec<_> = start.env.clone().into_iter().collect();
    extra_env.sort();
    Ok(SpawnSpec::for_user(&start.user, env, argv, extra_env, pty))
}

/// The program serving a subsystem: for "sftp", the image's own sftp-server when it
/// has one, else the built-in server mounted into the container.
async fn subsystem_argv(
    backend: &SharedBackend,
    container: &str,
    name: &str,
) -> Result<Vec<String>, SessionError> {
    if name != "sftp" {
        return Err(SessionError::UnknownSubsystem(name.to_owned()));
    }
    let mut candidates = SFTP_SERVERS.to_vec();
    candidates.push(SFTP_SERVER_PATH);
    match backend.find_executable(container, &candidates).await {
        Ok(Some(path)) => {
            tracing::debug!(container, server = %path, "sftp subsystem");
            Ok(vec![path])
        }
        Ok(None) => Err(SessionError::NoSftpServer),
        Err(e) => Err(SessionError::FindServer(e)),
    }
}

/// `argv` run through `labssh-init --xauth`, which installs the session's X11 cookie
/// as the student before it becomes `argv`. A container without labssh-init (made
/// for Docker exec) runs `argv` as it is: its X clients are refused for want of the
/// cookie, which the log says.
async fn with_xauth(
    backend: &SharedBackend,
    container: &str,
    x11: &pb::X11Auth,
    argv: Vec<String>,
) -> Vec<String> {
    match backend.find_executable(container, &[INIT_PATH]).await {
        Ok(Some(init)) => {
            let mut wrapped = vec![
                init,
                "--xauth".to_owned(),
                format!("{}.{}", x11.display, x11.screen),
                x11.protocol.clone(),
                x11.cookie.clone(),
                "--".to_owned(),
            ];
            wrapped.extend(argv);
            wrapped
        }
        found => {
            tracing::warn!(
                container,
                ?found,
                "no labssh-init in the container: the X11 cookie is not installed"
            );
            argv
        }
    }
}
