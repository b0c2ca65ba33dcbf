//! labssh-init: PID 1 of every labssh container.
//!
//! The agent mounts this static binary read-only into each container it creates and
//! makes it the entrypoint. It reaps orphans, forwards signals to the image's own
//! entrypoint and cmd (run as its child), and exits with it. On a unix socket in a
//! directory shared with the agent it spawns session processes (with a terminal or
//! pipes), so starting a shell costs a fork and an exec instead of a `docker exec`, and
//! opens TCP connections, resolves names and listens inside the container for port
//! forwarding. Only peers outside the container's PID namespace (the agent) are
//! served. See `labssh_helper_proto::wire` for the protocol. In a Kubernetes pod's
//! init container, `--install DIR` copies it and labssh-sftp into the pod instead.

mod account;
mod args;
mod buffer;
mod child;
mod connect;
mod creds;
mod install;
mod listen;
mod server;
mod session;
mod signals;
mod sys;
mod unix;
mod xauth;

fn main() {
    let opts = match args::parse(std::env::args_os().skip(1)) {
        Ok(args::Parsed::Run(opts)) => opts,
        Ok(args::Parsed::Print(text)) => {
            println!("{text}");
            return;
        }
        Ok(args::Parsed::Install(dir)) => match install::run(&dir) {
            Ok(()) => return,
            Err(message) => {
                eprintln!("labssh-init: {message}");
                std::process::exit(1);
            }
        },
        Ok(args::Parsed::Xauth(request)) => std::process::exit(xauth::run(request)),
        Err(message) => {
            eprintln!("labssh-init: {message}\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    std::process::exit(server::run(opts));
}
