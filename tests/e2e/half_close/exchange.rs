//! One half-close exchange, as `half_close_probe.c` makes and serves them: the client
//! writes a message, shuts its write side down and reads to EOF; the server answers
//! only after that EOF, with the byte count and the message reversed, and closes.
//! The message rule is the probe's, so both sides know what to expect.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest message (every 10th), as in the probe.
const MAX_MESSAGE: usize = 100_000;
/// How long one exchange may take before it counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Message `i` of a run seeded with `seed`, byte for byte as the probe makes it.
pub fn message(i: u64, seed: u64) -> Vec<u8> {
    let len = if i % 10 == 9 {
        MAX_MESSAGE as u64
    } else {
        1 + (i * 7919 + seed) % 3000
    };
    (0..len).map(|k| b'a' + ((k * 31 + i) % 26) as u8).collect()
}

/// The server's answer to `message`: "<byte count>:" and the message reversed.
pub fn answer(message: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", message.len()).into_bytes();
    out.extend(message.iter().rev());
    out
}

/// How a run of exchanges went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The exact answer came back.
    pub ok: u64,
    /// Nothing came back: EOF straight after the write side was shut.
    pub lost: u64,
    /// Something else came back.
    pub wrong: u64,
    /// Connecting, writing or reading failed, or the answer took too long.
    pub failed: u64,
}

impl Tally {
    /// All `n` exchanges answered exactly.
    pub fn all_ok(n: u64) -> Tally {
        Tally {
            ok: n,
            ..Tally::default()
        }
    }

    /// Reads the probe's summary line "ok=A lost=B wrong=C failed=D".
    pub fn parse(line: &str) -> Option<Tally> {
        let mut tally = Tally::default();
        for field in line.split_whitespace() {
            let (name, value) = field.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            match name {
                "ok" => tally.ok = value,
                "lost" => tally.lost = value,
                "wrong" => tally.wrong = value,
                "failed" => tally.failed = value,
                _ => return None,
            }
        }
        Some(tally)
    }

    /// Counts what one exchange sent as `message` got back (`None`: it failed).
    pub fn count(&mut self, message: &[u8], got: Option<Vec<u8>>) {
        match got {
            None => self.failed += 1,
            Some(got) if got.is_empty() => self.lost += 1,
            Some(got) if got == answer(message) => self.ok += 1,
            Some(_) => self.wrong += 1,
        }
    }
}

/// One exchange on an open connection: writes `message`, shuts the write side down
/// and reads to EOF. `None` when any of it failed or took too long.
pub async fn exchange(mut s: TcpStream, message: &[u8]) -> Option<Vec<u8>> {
    let run = async {
        s.write_all(message).await.ok()?;
        s.shutdown().await.ok()?;
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.ok()?;
        Some(back)
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run).await.ok()?
}

/// Serves exchanges on `listener` until the test ends: reads each connection to
/// EOF, then answers and closes.
pub fn serve(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut message = Vec::new();
                if s.read_to_end(&mut message).await.is_ok() {
                    let _ = s.write_all(&answer(&message)).await;
                }
            });
        }
    });
}

#[test]
fn the_summary_line_reads_back() {
    assert_eq!(
        Tally::parse("ok=98 lost=1 wrong=0 failed=1"),
        Some(Tally {
            ok: 98,
            lost: 1,
            wrong: 0,
            failed: 1
        })
    );
    assert_eq!(Tally::parse("ok=x"), None);
    assert_eq!(answer(b"abc"), b"3:cba");
    assert_eq!(message(9, 0).len(), MAX_MESSAGE);
}
