//! What every phase of one session channel uses: the connection's context
//! and the way to write to the client.

use std::time::Duration;

use bytes::Bytes;
use russh::server::Msg;
use russh::{ChannelId, ChannelWriteHalf};

use crate::state::Context;

/// How long a gateway message (a notice, an error) waits for room in the
/// client's window.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every phase of one channel uses; lives as long as the channel task.
pub(crate) struct Session {
    /// What the connection handed over.
    pub ctx: Context,
    /// The channel's id, for logs.
    pub id: ChannelId,
    /// Writes to the client.
    pub write: ChannelWriteHalf<Msg>,
}

impl Session {
    /// Writes one line from the gateway to the client's stderr. A client that
    /// never opens its window must not keep the channel from closing.
    pub async fn tell(&self, message: &str, newline: &str) {
        let text = Bytes::from(line(message, newline));
        let _ = tokio::time::timeout(
            CLIENT_WRITE_TIMEOUT,
            self.write.extended_data_bytes(1, text),
        )
        .await;
    }
}

/// A line from the gateway, as the student reads it.
pub(crate) fn line(message: &str, newline: &str) -> String {
    format!("labssh: {message}{newline}")
}
