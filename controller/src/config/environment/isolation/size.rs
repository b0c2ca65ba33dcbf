//! Sizes as Docker writes them: `"256m"`, `"1g"`, `"65536"`.
//!
//! Docker's `--shm-size 256m` means 256 MiB: its suffixes are binary (k = 1024). The
//! size crates read `m` as 10^6 (`bytesize`) or need `MiB`; an operator copying a
//! value from `docker run` would silently get 5% less. So this follows Docker.

/// A suffix and how many bytes it stands for.
const UNITS: [(&str, u64); 5] = [
    ("b", 1),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
];

/// Bytes in `text`: digits, then optionally one of b, k, m, g, t (any case, an
/// optional trailing `b` or `ib` after k–t as in "256mb", "1GiB"). The message says
/// what is wrong.
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size like \"256m\", \"1g\" or \"65536\""
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let suffix = suffix.trim().to_ascii_lowercase();
    let unit = suffix
        .strip_suffix("ib")
        .or_else(|| suffix.strip_suffix('b').filter(|s| !s.is_empty()))
        .unwrap_or(&suffix);
    let unit = if unit.is_empty() { "b" } else { unit };
    let Some((_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "{text:?}: unknown unit {suffix:?} (use b, k, m, g or t, as Docker does)"
        ));
    };
    number
        .checked_mul(*factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn docker_sizes_are_binary() {
        assert_eq!(parse("256m"), Ok(256 << 20));
        assert_eq!(parse("256M"), Ok(256 << 20));
        assert_eq!(parse("256mb"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("64k"), Ok(64 << 10));
        assert_eq!(parse("65536"), Ok(65536));
        assert_eq!(parse("100b"), Ok(100));
        assert_eq!(parse(" 2 g "), Ok(2 << 30));
    }

    #[test]
    fn bad_sizes_say_why() {
        for bad in ["", "m", "-1m", "1.5g", "12x", "1pb", "1 mm"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("size") || err.contains("unit"), "{bad}: {err}");
        }
        assert!(parse("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse("17179869184g").unwrap_err().contains("too large"));
    }
}
