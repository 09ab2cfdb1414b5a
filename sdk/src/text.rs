//! Builds log lines without `core::fmt`: `format!` would link core's formatting machinery,
//! and its tables would sit in every instance's memory. Push the words with
//! [`String::push_str`] and the numbers with these.
//!
//! ```
//! # extern crate alloc;
//! # use alloc::string::String;
//! let mut line = String::from("step ");
//! http_spawn_sdk::text::push_u32(&mut line, 3);
//! line.push_str(" of ");
//! http_spawn_sdk::text::push_i64(&mut line, -10);
//! assert_eq!(line, "step 3 of -10");
//! ```

use alloc::string::String;

/// Appends `n` in decimal.
pub fn push_u32(line: &mut String, n: u32) {
    push_u64(line, u64::from(n));
}

/// Appends `n` in decimal.
pub fn push_u64(line: &mut String, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is below 10, so the cast keeps it whole.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        line.push(char::from(digit));
    }
}

/// Appends `n` in decimal, with a `-` when it is negative.
pub fn push_i64(line: &mut String, n: i64) {
    if n < 0 {
        line.push('-');
    }
    push_u64(line, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(push: impl FnOnce(&mut String)) -> String {
        let mut line = String::from(">");
        push(&mut line);
        line
    }

    #[test]
    fn pushes_decimal_numbers() {
        assert_eq!(text(|l| push_u32(l, 0)), ">0");
        assert_eq!(text(|l| push_u32(l, 7)), ">7");
        assert_eq!(text(|l| push_u32(l, 1_000)), ">1000");
        assert_eq!(text(|l| push_u32(l, u32::MAX)), ">4294967295");
        assert_eq!(text(|l| push_u64(l, u64::MAX)), ">18446744073709551615");
        assert_eq!(text(|l| push_i64(l, -42)), ">-42");
        assert_eq!(text(|l| push_i64(l, i64::MIN)), ">-9223372036854775808");
        assert_eq!(text(|l| push_i64(l, i64::MAX)), ">9223372036854775807");
    }
}
