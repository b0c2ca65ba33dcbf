//! Opening a stream to an agent: send the first message, wait for the first
//! answer. A session (`Start` → `Started`), a forwarded connection (`Open` or
//! `Attach` → `Opened`) and an `ssh -R` listener (`ListenRequest` →
//! `Listening`) all open this way; the timeout and what each outcome means
//! are decided here, once.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::UpstreamError;

/// What the first message on an agent's stream says.
#[derive(Debug, PartialEq)]
pub enum Answer<T> {
    /// The stream is open; what the agent reported.
    Ready(T),
    /// The agent refused; the message is written for the student.
    Refused {
        /// What the agent said.
        message: String,
        /// Whether policy refused it (SSH's "administratively prohibited").
        prohibited: bool,
    },
    /// A line for the student while the agent gets ready (a session's container
    /// being started); the real answer follows.
    Progress(String),
    /// Anything else, which no agent sends first.
    Unexpected,
}

/// A message an agent opens one of its streams with.
pub trait Opening {
    /// What a successful first answer carries.
    type Ready;
    /// The stream, as a student reads it: "the container's node closed the …".
    const STREAM: &'static str;
    /// What this message, received first, says.
    fn answer(self) -> Answer<Self::Ready>;
}

impl<T> From<pb::SessionError> for Answer<T> {
    fn from(e: pb::SessionError) -> Self {
        Answer::Refused {
            message: e.message,
            prohibited: false,
        }
    }
}

impl<T> From<pb::ForwardError> for Answer<T> {
    fn from(e: pb::ForwardError) -> Self {
        Answer::Refused {
            message: e.message,
            prohibited: e.prohibited,
        }
    }
}

/// Implements [`Opening`] for the agent's message `$output`, whose oneof
/// (`pb::$module::Msg`) opens a stream with `$ready` or refuses with `Error`.
macro_rules! opening {
    ($output:ty, $module:ident, $ready:ident($ready_ty:ty), $stream:literal) => {
        impl Opening for $output {
            type Ready = $ready_ty;
            const STREAM: &'static str = $stream;
            fn answer(self) -> Answer<$ready_ty> {
                use pb::$module::Msg;
                match self.msg {
                    Some(Msg::$ready(ready)) => Answer::Ready(ready),
                    Some(Msg::Error(e)) => e.into(),
                    _ => Answer::Unexpected,
                }
            }
        }
    };
}

impl Opening for pb::SessionOutput {
    type Ready = pb::Started;
    const STREAM: &'static str = "session";
    fn answer(self) -> Answer<pb::Started> {
        use pb::session_output::Msg;
        match self.msg {
            Some(Msg::Started(ready)) => Answer::Ready(ready),
            Some(Msg::Error(e)) => e.into(),
            Some(Msg::Progress(p)) => Answer::Progress(p.message),
            _ => Answer::Unexpected,
        }
    }
}
opening!(
    pb::ForwardOutput,
    forward_output,
    Opened(pb::ForwardOpened),
    "connection"
);
opening!(
    pb::ListenEvent,
    listen_event,
    Listening(pb::Listening),
    "listener"
);

/// An agent's stream, open, and what its first answer reported.
pub type Opened<O> = (tonic::Streaming<O>, <O as Opening>::Ready);

/// Waits up to `timeout` for `call` to open the stream and for the agent's
/// first answer on it.
pub async fn first_answer<O: Opening>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<O>>, tonic::Status>>,
) -> Result<Opened<O>, UpstreamError> {
    first_answer_with(timeout, call, None).await
}

/// [`first_answer`], handing each progress line before it to `progress` (none:
/// dropped), in order.
pub async fn first_answer_with<O: Opening>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<O>>, tonic::Status>>,
    progress: Option<&mpsc::UnboundedSender<String>>,
) -> Result<Opened<O>, UpstreamError> {
    let answered = tokio::time::timeout(timeout, async {
        let mut stream = call
            .await
            .map_err(UpstreamError::AgentUnreachable)?
            .into_inner();
        loop {
            let first = match stream.next().await {
                Some(Ok(first)) => first.answer(),
                Some(Err(status)) => return Err(UpstreamError::AgentLost(status)),
                None => return Err(UpstreamError::AgentClosed(O::STREAM)),
            };
            if let Answer::Progress(line) = first {
                if let Some(progress) = progress {
                    let _ = progress.send(line);
                }
                continue;
            }
            return match first {
                Answer::Ready(ready) => Ok((stream, ready)),
                Answer::Refused {
                    message,
                    prohibited,
                } => Err(UpstreamError::Refused {
                    message,
                    prohibited,
                }),
                Answer::Unexpected | Answer::Progress(_) => Err(UpstreamError::Unexpected),
            };
        }
    })
    .await;
    answered.unwrap_or(Err(UpstreamError::TimedOut(timeout)))
}

/// The input side of a bidirectional stream with `first` already queued:
/// the sender for what follows, and the stream to hand to the call.
pub fn with_first<I>(first: I, queue: usize) -> (mpsc::Sender<I>, ReceiverStream<I>) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    // A fresh queue always has room for one.
    let _ = tx.try_send(first);
    (tx, ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_messages_are_read_alike() {
        let refused = pb::ForwardOutput {
            msg: Some(pb::forward_output::Msg::Error(pb::ForwardError {
                message: "no".into(),
                prohibited: true,
            })),
        };
        assert_eq!(
            refused.answer(),
            Answer::Refused {
                message: "no".into(),
                prohibited: true
            }
        );
        let eof = pb::SessionOutput {
            msg: Some(pb::session_output::Msg::Exit(pb::ExitStatus::default())),
        };
        assert_eq!(eof.answer(), Answer::Unexpected);
        assert_eq!(pb::ListenEvent { msg: None }.answer(), Answer::Unexpected);
    }

    #[tokio::test]
    async fn a_call_that_fails_is_an_unreachable_agent() {
        let failed = first_answer::<pb::SessionOutput>(Duration::from_secs(1), async {
            Err(tonic::Status::unavailable("tcp connect error"))
        })
        .await;
        assert!(matches!(failed, Err(UpstreamError::AgentUnreachable(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_in_time_is_a_timeout() {
        let never =
            first_answer::<pb::ForwardOutput>(Duration::from_secs(5), std::future::pending()).await;
        assert!(matches!(never, Err(UpstreamError::TimedOut(t)) if t == Duration::from_secs(5)));
    }
}
