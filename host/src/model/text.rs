//! Untrusted text: as every store can keep it, and as a log line shows it.

use std::borrow::Cow;
use std::fmt;

/// `text` with each NUL replaced by U+FFFD, as bytes that are not UTF-8 become: PostgreSQL's
/// `text` cannot hold a NUL, and a terminal or a C library reading the text would stop at one.
/// Applied where a guest's text is captured or recorded (its output, its log calls, its error),
/// so that every store shows the same text; costs one scan when there is none.
pub fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// The most of a task's error kept: where an end is built, a longer message is cut to this
/// many bytes and marked, so that the record, every monitor's notice, the `exit` event and the
/// log each hold a few KiB however much a guest wrote.
pub const MAX_ERROR_BYTES: usize = 4096;

/// `message` as an end keeps it: [`storable`], and cut at a character boundary within
/// [`MAX_ERROR_BYTES`] when longer, ending with how long it was.
pub fn error_text(message: String) -> String {
    let message = storable(message);
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut, {} bytes in all)", &message[..end], message.len())
}

/// `text` with control characters (newlines, ESC and the rest of C0 and C1) escaped as
/// `\n`, `\u{1b}`: what a log line shows of a guest's or a client's text, so that it can
/// neither forge a line nor drive a terminal. Borrowed when there are none.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Text a client or a guest chose, shown in a log line as [`one_line`] makes it:
/// `name = %Printable(&name)`.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_a_log_line() {
        assert_eq!(one_line("a\nforged line"), "a\\nforged line");
        assert_eq!(
            Printable("red \u{1b}[31m text\r").to_string(),
            "red \\u{1b}[31m text\\r"
        );
        assert!(matches!(one_line("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(error_text("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_BYTES); // two bytes each
        let cut = error_text(long);
        assert!(cut.ends_with(&format!("… (cut, {} bytes in all)", 2 * MAX_ERROR_BYTES)));
        assert!(cut.len() < MAX_ERROR_BYTES + 64);
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn a_nul_becomes_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(storable("a\0b\0".into()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable("plain ✓ text".into()), "plain ✓ text");
    }
}
