//! One sweep client: connect, authenticate, exec, read to the exit status,
//! disconnect — every phase timed and bounded.

use std::time::Instant;

use russh::ChannelMsg;

use crate::client::Endpoint;
use crate::phases::{Failure, FailureKind, Phase, Timings};

/// How the command ended.
enum Exit {
    Status(u32),
    Signal(String),
}

pub async fn run(endpoint: &Endpoint, user: &str, command: &str) -> Result<Timings, Failure> {
    let mut timings = Timings::start();
    let session = endpoint.login(user, &mut timings).await?;
    let mut channel = session.open_channel(endpoint).await?;
    timings.lap(Phase::ChannelOpen);

    let exec_started = timings.lap_start();
    endpoint
        .phase(Phase::ExecExit, channel.exec(true, command))
        .await?
        .map_err(|e| session.failure(Phase::ExecExit, &e))?;
    let deadline = tokio::time::Instant::from_std(exec_started + endpoint.phase_timeout);
    let mut first_byte: Option<Instant> = None;
    let exit = loop {
        let message = tokio::time::timeout_at(deadline, channel.wait())
            .await
            .map_err(|_| {
                Failure::new(
                    FailureKind::Timeout,
                    Phase::ExecExit,
                    format!("no exit status within {:?}", endpoint.phase_timeout),
                )
            })?;
        match message {
            Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. } | ChannelMsg::Eof) => {
                first_byte.get_or_insert_with(Instant::now);
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => break Exit::Status(exit_status),
            Some(ChannelMsg::ExitSignal {
                signal_name,
                error_message,
                ..
            }) => break Exit::Signal(format!("{signal_name:?} {error_message}")),
            Some(ChannelMsg::Failure) => {
                return Err(Failure::new(
                    FailureKind::ChannelFailed,
                    Phase::ExecExit,
                    "the server refused the exec request",
                ))
            }
            Some(ChannelMsg::Close) | None => {
                let kind = if session.handle.is_closed() {
                    FailureKind::Disconnected
                } else {
                    FailureKind::ChannelFailed
                };
                return Err(Failure::new(
                    kind,
                    Phase::ExecExit,
                    "the channel closed without an exit status",
                ));
            }
            Some(_) => {}
        }
    };
    let exited = timings.lap(Phase::ExecExit);
    timings.set(
        Phase::ExecFirstByte,
        first_byte.unwrap_or(exited) - exec_started,
    );
    drop(channel);
    session.close(endpoint).await?;
    timings.lap(Phase::Close);
    match exit {
        Exit::Status(0) => Ok(timings),
        Exit::Status(code) => Err(Failure::new(
            FailureKind::NonzeroExit,
            Phase::ExecExit,
            format!("exit status {code}"),
        )),
        Exit::Signal(signal) => Err(Failure::new(
            FailureKind::NonzeroExit,
            Phase::ExecExit,
            format!("killed by signal {signal}"),
        )),
    }
}
