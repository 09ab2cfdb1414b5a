//! Untrusted text, as every store can keep it.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_becomes_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(storable("a\0b\0".into()), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable("plain ✓ text".into()), "plain ✓ text");
    }
}
