//! End to end with in-process labs: the stock `ssh` client → proxy → controller →
//! agent → real Docker containers, all on loopback. One test binary, one module per
//! area:
//!
//! - `agent_forwarding`: `ssh -A` with a real `ssh-agent`, the socket the student's
//!   and gone with the connection, `forward_agent = false`;
//! - `audit`: the proxy's audit log, field by field, with no secret in it;
//! - `recording`: pty sessions recorded as asciicast, replayed by `labssh replay` to
//!   the same bytes, a full disk stopping only the recording;
//! - `sessions`: logins, persistent containers, stdin/stdout/stderr, exit status,
//!   terminals (also run on the Docker exec path: `LABSSH_TEST_SPAWN=exec`);
//! - `bad_input`: every mistake a student or operator can make gets one clear line;
//! - `credential_cache`: a validated login is a cache hit in Redis later;
//! - `file_transfer`: sftp, scp and rsync;
//! - `forwarding`: `ssh -L`, `-D`, `-R` and the policy that keeps students apart;
//! - `groups`: groups decide environments (`allowed_groups`), the uid/gid from the
//!   identity (`uid = "ldap"`), prestart following both;
//! - `half_close`: an EOF travels as an EOF on every forward, session stdin and SFTP;
//! - `jump`: `ssh -J` through labssh to the student's own sshd in the container, and
//!   the forwarded agent authenticating to it from a session;
//! - `hooks`: lifecycle hooks (commands, timers, webhooks) and a refusing login hook;
//! - `isolation`: rlimits, seccomp and a read-only root in the shell; the process and
//!   memory limits named when a student hits them;
//! - `lifecycle`: idle containers paused and stopped, woken with words on stderr;
//!   old ones recreated at a login with no other session;
//! - `operators`: `labssh sessions` across two proxy replicas, `labssh kick`;
//! - `prestart`: containers made ahead of a class by users file, group and schedule;
//! - `services`: a server in the container listed by name (`labssh services`,
//!   `ssh alice+@lab services`) while it listens, and only then;
//! - `streamlocal`: `ssh -L PORT:/PATH` and `ssh -R /PATH:...` to unix sockets in the
//!   container, as the student, under the forwarding policy;
//! - `start_queue`: bounded container starts, places on stderr, a full queue, a
//!   client leaving it (a gate holds Docker's starts);
//! - `web`: the HTTPS front door with curl (login, a student's server by path and
//!   host on two replicas with one cookie, what the service is sent, logout) and in
//!   headless chromium (the portal, python3's http.server, a WebSocket echo);
//! - `x11`: `ssh -X`/`-Y` to a real X server on the client's side (Xvfb), the cookie
//!   installed by the image's xauth or written by labssh-init, `forward_x11 = false`.

#[path = "../lab/mod.rs"]
mod lab;

mod agent_forwarding;
mod audit;
mod bad_input;
mod containers;
mod credential_cache;
mod file_transfer;
mod forwarding;
mod groups;
mod half_close;
mod hooks;
mod isolation;
mod jump;
mod lifecycle;
mod operators;
mod prestart;
mod recording;
mod services;
mod sessions;
mod start_queue;
mod startup;
mod streamlocal;
mod web;
mod x11;
