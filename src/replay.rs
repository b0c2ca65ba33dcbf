//! `labssh replay FILE`: plays a session recording (asciicast v2, as the proxy writes
//! them with `[recording] dir`) in this terminal, at its own pace or faster.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `labssh replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recording (`{dir}/{user}/{date}/{session}.cast`).
    pub file: PathBuf,
    /// Play this many times faster; 0 prints it all at once.
    #[arg(long, default_value = "1")]
    pub speed: f64,
    /// Longest pause kept between two events, in seconds (idle time is cut).
    #[arg(long, default_value = "2")]
    pub max_wait: f64,
    /// Show what the student typed (recordings with `input-and-output`) too.
    #[arg(long)]
    pub input: bool,
}

/// Plays `args.file` to standard output.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.speed >= 0.0, "--speed must be 0 or more");
    let file = std::fs::File::open(&args.file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let mut out = std::io::stdout().lock();
    play(BufReader::new(file), &mut out, &args)
}

/// Writes the recording's output events to `out`, pausing between them.
pub fn play(input: impl BufRead, out: &mut impl Write, args: &ReplayArgs) -> anyhow::Result<()> {
    let mut lines = input.lines();
    let header = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty recording"))??;
    let header: serde_json::Value = serde_json::from_str(&header)
        .map_err(|e| anyhow::anyhow!("not an asciicast recording: {e}"))?;
    anyhow::ensure!(
        header["version"] == 2,
        "only asciicast version 2 recordings can be played (this one says {})",
        header["version"]
    );
    let mut last = 0.0;
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: (f64, String, String) =
            serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("event {}: {e}", n + 1))?;
        let (time, code, data) = event;
        let show = code == "o" || (args.input && code == "i");
        if !show {
            continue;
        }
        if args.speed > 0.0 {
            let wait = ((time - last).max(0.0)).min(args.max_wait) / args.speed;
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        last = time;
        out.write_all(data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: bool) -> ReplayArgs {
        ReplayArgs {
            file: PathBuf::new(),
            speed: 0.0,
            max_wait: 2.0,
            input,
        }
    }

    #[test]
    fn output_is_played_in_order_and_input_only_when_asked() {
        let cast = "{\"version\":2,\"width\":80,\"height\":24}\n\
                    [0.1,\"o\",\"$ \"]\n[0.5,\"i\",\"ls\\r\"]\n[0.6,\"r\",\"100x30\"]\n[0.7,\"o\",\"a b\\r\\n\"]\n";
        let mut out = Vec::new();
        play(cast.as_bytes(), &mut out, &args(false)).unwrap();
        assert_eq!(out, b"$ a b\r\n");
        let mut out = Vec::new();
        play(cast.as_bytes(), &mut out, &args(true)).unwrap();
        assert_eq!(out, b"$ ls\ra b\r\n");
    }

    #[test]
    fn other_files_are_refused_in_words() {
        let mut out = Vec::new();
        let e = play(&b"{\"version\":1}\n"[..], &mut out, &args(false)).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(play(&b""[..], &mut out, &args(false)).is_err());
        assert!(play(&b"hello\n"[..], &mut out, &args(false)).is_err());
    }
}
