//! One throughput session: log in, run the command, and move the bytes one
//! way, reading the channel all along.

use std::time::{Duration, Instant};

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncReadExt;

use crate::args::Direction;
use crate::client::{Endpoint, Session};
use crate::phases::{Failure, FailureKind, Phase, Timings};

/// The command that swallows pushed bytes.
const PUSH_COMMAND: &str = "cat > /dev/null";

/// Moves `bytes` one way through a fresh session; returns when the data
/// started and finished moving.
pub async fn transfer(
    endpoint: &Endpoint,
    user: &str,
    direction: Direction,
    bytes: u64,
) -> Result<(Instant, Instant), Failure> {
    let mut timings = Timings::start();
    let session = endpoint.login(user, &mut timings).await?;
    let channel = session.open_channel(endpoint).await?;
    let command = match direction {
        Direction::Push => PUSH_COMMAND.to_string(),
        _ => format!("head -c {bytes} /dev/zero"),
    };
    let start = Instant::now();
    endpoint
        .phase(Phase::ExecExit, channel.exec(true, command))
        .await?
        .map_err(|e| session.failure(Phase::ExecExit, &e))?;
    let (mut read, write) = channel.split();
    let pushed = async {
        if direction == Direction::Push {
            push(&write, &session, bytes).await?;
        }
        Ok::<(), Failure>(())
    };
    // The reader runs all along: an unread channel would stall the connection.
    let moved = tokio::time::timeout(endpoint.phase_timeout, async {
        tokio::join!(pushed, read_to_exit(&mut read))
    })
    .await
    .map_err(|_| too_slow(bytes, endpoint.phase_timeout))?;
    moved.0?;
    let received = moved.1?;
    let end = Instant::now();
    if direction == Direction::Pull && received != bytes {
        return Err(Failure::new(
            FailureKind::ChannelFailed,
            Phase::ExecExit,
            format!("received {received} of {bytes} bytes"),
        ));
    }
    drop((read, write));
    let _ = session.close(endpoint).await;
    Ok((start, end))
}

/// Writes `bytes` zeros, then the end of input.
async fn push(write: &ChannelWriteHalf<Msg>, session: &Session, bytes: u64) -> Result<(), Failure> {
    write
        .data(tokio::io::repeat(0).take(bytes))
        .await
        .map_err(|e| session.failure(Phase::ExecExit, &e))?;
    write
        .eof()
        .await
        .map_err(|e| session.failure(Phase::ExecExit, &e))
}

/// Reads to the exit status and the end of the output (which may still
/// arrive after the status); returns how many bytes came.
async fn read_to_exit(read: &mut ChannelReadHalf) -> Result<u64, Failure> {
    let mut received = 0u64;
    let mut status = None;
    let mut eof = false;
    while status.is_none() || !eof {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => received += data.len() as u64,
            Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
            Some(ChannelMsg::Eof) => eof = true,
            Some(ChannelMsg::Failure) => {
                return Err(Failure::new(
                    FailureKind::ChannelFailed,
                    Phase::ExecExit,
                    "the server refused the exec request",
                ))
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    match status {
        Some(0) => Ok(received),
        Some(code) => Err(Failure::new(
            FailureKind::NonzeroExit,
            Phase::ExecExit,
            format!("exit status {code}"),
        )),
        None => Err(Failure::new(
            FailureKind::ChannelFailed,
            Phase::ExecExit,
            "the channel closed without an exit status",
        )),
    }
}

fn too_slow(bytes: u64, phase_timeout: Duration) -> Failure {
    Failure::new(
        FailureKind::Timeout,
        Phase::ExecExit,
        format!("{bytes} bytes did not move within {phase_timeout:?}; raise --phase-timeout"),
    )
}
