//! `arrivals`: plots time-to-shell per student in arrival order from CSV files
//! (`arrival,index,start_ms,ms,status`, one line per login, as
//! `scripts/bench-class-start.sh` writes them), one series per file, so the shape of
//! a queue shows: flat for a server that serves all at once, a ramp for one that
//! serves them in turn.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::plot::arrivals::Series;

/// The arguments of `arrivals`.
#[derive(Args, Clone)]
pub struct ArrivalsArgs {
    /// NAME=FILE: a series and its CSV (arrival,index,start_ms,ms,status). Repeat.
    #[arg(long = "series", value_name = "NAME=FILE", required = true, value_parser = parse_series)]
    pub series: Vec<(String, PathBuf)>,
    /// Where to write the SVG.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The plot's caption.
    #[arg(long, default_value = "Time to shell in arrival order")]
    pub title: String,
}

/// One line of an arrivals CSV.
#[derive(Debug, Deserialize)]
struct Line {
    /// 1 for the first to start.
    arrival: u32,
    /// The login's own number (which student); not plotted.
    #[allow(dead_code)]
    index: u32,
    /// When it started, from the first start; not plotted.
    #[allow(dead_code)]
    start_ms: u64,
    /// Its time from start to end.
    ms: u64,
    /// Its exit status: 0 for a login that worked.
    status: i32,
}

/// `NAME=FILE`.
fn parse_series(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("'{text}': give NAME=FILE")),
    }
}

/// A series from the CSV text of one file.
pub fn series_of(name: &str, text: &str) -> anyhow::Result<Series> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut points = Vec::new();
    let mut failed = 0;
    for (i, line) in reader.deserialize::<Line>().enumerate() {
        let line = line.with_context(|| format!("line {}", i + 2))?;
        if line.status == 0 {
            points.push((line.arrival, line.ms as f64 / 1000.0));
        } else {
            failed += 1;
        }
    }
    points.sort_by_key(|p| p.0);
    Ok(Series {
        name: name.to_owned(),
        points,
        failed,
    })
}

/// Reads every series and writes the plot.
pub fn run(args: ArrivalsArgs) -> anyhow::Result<u8> {
    let series = args
        .series
        .iter()
        .map(|(name, file)| read(name, file))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let svg = crate::plot::arrivals::svg(&args.title, &series)?;
    std::fs::write(&args.out, svg).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(0)
}

fn read(name: &str, file: &Path) -> anyhow::Result<Series> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    series_of(name, &text).with_context(|| format!("{}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "arrival,index,start_ms,ms,status\n2,7,3,1500,0\n1,3,0,900,0\n3,1,5,20,255\n";

    #[test]
    fn series_are_in_arrival_order_with_failures_counted() {
        let series = series_of("labssh none", CSV).unwrap();
        assert_eq!(series.points, vec![(1, 0.9), (2, 1.5)]);
        assert_eq!(series.failed, 1);
    }

    #[test]
    fn a_broken_file_names_its_line() {
        let e = series_of("x", "arrival,index,start_ms,ms,status\n1,1,0,soon,0\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }

    #[test]
    fn series_need_a_name_and_a_file() {
        assert!(parse_series("a=b.csv").is_ok());
        assert!(parse_series("b.csv").is_err());
        assert!(parse_series("=b.csv").is_err());
    }
}
