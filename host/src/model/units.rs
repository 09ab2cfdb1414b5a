//! Sizes as people write them, and the unit wasm allots memory in.

/// Linear memory is allotted in wasm pages of 64 KiB.
pub const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// Parses a memory size: `65536`, `64KiB`, `1MiB`, `2GiB` (also `K`, `M`, `G`, `KB`…, all
/// binary), which must be a whole number of wasm pages between one page and 4 GiB.
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes % WASM_PAGE_BYTES != 0 {
        return Err(format!(
            "{:?} is not a whole number of 64 KiB wasm pages",
            text.trim()
        ));
    }
    Ok(bytes)
}

/// Parses a size in bytes as [`parse_memory_size`] does, without the whole pages: between
/// 64 KiB and 4 GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 1MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(scale)
        .filter(|&bytes| (WASM_PAGE_BYTES..=4 << 30).contains(&bytes))
        .ok_or_else(|| format!("{text:?} is outside 64KiB..=4GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_memory_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_memory_size("16M"), Ok(16 << 20));
        assert_eq!(parse_memory_size("65536"), Ok(65_536));
        assert_eq!(parse_memory_size("4GiB"), Ok(4 << 30));
        for bad in ["", "MiB", "1.5MiB", "100KiB", "0", "5GiB", "1 parsec"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
