//! Byte counts such as `64M` or `1GiB` for `throughput --bytes`.

/// Past this a single run takes minutes even on a fast link.
const MAX_BYTES: u64 = 64 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// `1000`, `64K`/`64KB` (10^3), `64KiB` (2^10), likewise M, G.
pub fn parse(text: &str) -> Result<ByteSize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}': expected a byte count such as 64M or 1GiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "k" | "kB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (K, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = n
        .checked_mul(multiplier)
        .filter(|b| (1..=MAX_BYTES).contains(b))
        .ok_or_else(|| format!("'{text}': give between 1 byte and 64 GiB"))?;
    Ok(ByteSize(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("1000").unwrap().0, 1000);
        assert_eq!(parse("4M").unwrap().0, 4_000_000);
        assert_eq!(parse("2MiB").unwrap().0, 2 << 20);
        assert_eq!(parse("1G").unwrap().0, 1_000_000_000);
        assert!(parse("0").is_err());
        assert!(parse("5X").is_err());
        assert!(parse("M").is_err());
        assert!(parse("100G").is_err());
    }
}
