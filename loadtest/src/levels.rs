//! `--levels`: how many parallel connections each step of a sweep opens.

/// Seed 000 measured 1–100 in steps of 10; a lab of 300 is the target here.
pub const DEFAULT_LEVELS: &str = "1,10-300:10";

/// One level may not open more connections than this: past it the client
/// machine, not the server, is what gets measured.
pub const MAX_LEVEL: u32 = 5_000;

/// Bounds the number of steps so a typo cannot start a days-long run.
const MAX_STEPS: usize = 1_000;

/// Parallel connection counts, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels(pub Vec<u32>);

/// Parses `1,10,20` and ranges `START-END:STEP` (END included), e.g. `1,10-300:10`.
pub fn parse(text: &str) -> Result<Levels, String> {
    let mut levels = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!(
                "'{text}': empty item; write e.g. 1,10,20 or 10-300:10"
            ));
        }
        match item.split_once('-') {
            None => levels.push(level(item)?),
            Some((start, rest)) => {
                let (end, step) = rest.split_once(':').unwrap_or((rest, "1"));
                let (start, end) = (level(start)?, level(end)?);
                let step: u32 = step.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("'{item}': the step after ':' must be a positive number")
                })?;
                if start > end {
                    return Err(format!("'{item}': the range runs backwards"));
                }
                levels.extend((start..=end).step_by(step as usize));
            }
        }
        if levels.len() > MAX_STEPS {
            return Err(format!("'{text}': more than {MAX_STEPS} levels"));
        }
    }
    for (i, l) in levels.iter().enumerate() {
        if levels[..i].contains(l) {
            return Err(format!("'{text}': level {l} appears twice"));
        }
    }
    Ok(Levels(levels))
}

fn level(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of connections"))?;
    if n == 0 || n > MAX_LEVEL {
        return Err(format!(
            "{n}: a level is between 1 and {MAX_LEVEL} connections"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_1_then_10_to_300() {
        let Levels(levels) = parse(DEFAULT_LEVELS).unwrap();
        assert_eq!(levels.len(), 31);
        assert_eq!(&levels[..3], &[1, 10, 20]);
        assert_eq!(levels.last(), Some(&300));
    }

    #[test]
    fn lists_and_ranges_mix() {
        assert_eq!(parse("1, 3").unwrap().0, vec![1, 3]);
        assert_eq!(parse("5-20:5,50").unwrap().0, vec![5, 10, 15, 20, 50]);
        assert_eq!(parse("1-3").unwrap().0, vec![1, 2, 3]);
        assert_eq!(parse("10-25:10").unwrap().0, vec![10, 20]);
    }

    #[test]
    fn bad_lists_are_explained() {
        for (text, needle) in [
            ("", "empty item"),
            ("1,,2", "empty item"),
            ("0", "between 1 and"),
            ("9999999", "between 1 and"),
            ("ten", "not a number"),
            ("20-10", "backwards"),
            ("1-10:0", "step"),
            ("1,1", "twice"),
            ("1-5000", "more than"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
