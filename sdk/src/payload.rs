//! Reads a field or two of the task's JSON payload without a JSON library or `core::fmt`: a
//! guest that links serde grows every instance's memory image, and a worker usually wants an
//! integer or a short string out of a flat object.
//!
//! Only the top level of an object is searched: a key inside a nested object or array, or
//! inside a string, is never mistaken for a field. Text that is not a JSON object reads as
//! having no fields.

/// Integer field `key` of a flat JSON object payload: `Ok(None)` when the payload or the field
/// is absent, `Err(reason)` when the field is present but not an integer that fits an `i64`
/// (a string, a fraction, an exponent, `null`, ...).
pub fn int(payload: Option<&str>, key: &str) -> Result<Option<i64>, &'static str> {
    let Some(value) = payload.and_then(|payload| field(payload, key)) else {
        return Ok(None);
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, value),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not an integer");
    }
    // Accumulated negatively, so that `i64::MIN` fits.
    let mut n: i64 = 0;
    for digit in digits.bytes() {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(digit - b'0')))
            .ok_or("integer out of range")?;
    }
    if negative {
        Ok(Some(n))
    } else {
        n.checked_neg().map(Some).ok_or("integer out of range")
    }
}

/// String field `key` of a flat JSON object payload, as written between its quotes, or `None`
/// when the payload or the field is absent or the field is not a string. Escapes are not
/// decoded: meant for names, pids and words, which have none.
pub fn string<'a>(payload: Option<&'a str>, key: &str) -> Option<&'a str> {
    field(payload?, key)?.strip_prefix('"')?.strip_suffix('"')
}

/// The raw text of the value of top-level field `key` in `json`, if `json` is an object that has
/// one.
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let mut scan = Scan { rest: json };
    scan.expect(b'{')?;
    if scan.peek() == Some(b'}') {
        return None;
    }
    loop {
        let name = scan.string()?;
        scan.expect(b':')?;
        let value = scan.value()?;
        if name.strip_prefix('"')?.strip_suffix('"')? == key {
            return Some(value);
        }
        scan.expect(b',')?;
    }
}

/// A cursor over JSON text that skips values without building them.
struct Scan<'a> {
    rest: &'a str,
}

impl<'a> Scan<'a> {
    /// The next byte that is not whitespace, left in place.
    fn peek(&mut self) -> Option<u8> {
        self.rest = self.rest.trim_start_matches([' ', '\t', '\n', '\r']);
        self.rest.bytes().next()
    }

    /// Consumes `byte`, after any whitespace; `None` if something else comes.
    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.peek()? != byte {
            return None;
        }
        self.take(1).map(drop)
    }

    /// Consumes and returns the first `n` bytes.
    fn take(&mut self, n: usize) -> Option<&'a str> {
        let (taken, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(taken)
    }

    /// Consumes a string, quotes included.
    fn string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let mut escaped = false;
        for (i, b) in self.rest.bytes().enumerate().skip(1) {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => return self.take(i + 1),
                _ => {}
            }
        }
        None
    }

    /// Consumes one value of any kind and returns its text. Nested objects and arrays are
    /// skipped by counting brackets outside strings; a scalar runs to the next delimiter.
    fn value(&mut self) -> Option<&'a str> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut in_string = false;
                let mut escaped = false;
                for (i, b) in self.rest.bytes().enumerate() {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' if in_string => escaped = true,
                        b'"' => in_string = !in_string,
                        _ if in_string => {}
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return self.take(i + 1);
                            }
                        }
                        _ => {}
                    }
                }
                None
            }
            _ => {
                let end = self
                    .rest
                    .find([',', '}', ']', ' ', '\t', '\n', '\r'])
                    .unwrap_or(self.rest.len());
                (end > 0).then(|| self.take(end))?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_reads_a_top_level_integer() {
        let payload = Some(r#"{"rows": 250, "exit_code":-3}"#);
        assert_eq!(int(payload, "rows"), Ok(Some(250)));
        assert_eq!(int(payload, "exit_code"), Ok(Some(-3)));
        assert_eq!(int(Some(r#" { "n" : 0 } "#), "n"), Ok(Some(0)));
        assert_eq!(
            int(Some(r#"{"n":-9223372036854775808}"#), "n"),
            Ok(Some(i64::MIN))
        );
        assert_eq!(
            int(Some(r#"{"n":9223372036854775807}"#), "n"),
            Ok(Some(i64::MAX))
        );
    }

    #[test]
    fn int_is_none_when_absent() {
        assert_eq!(int(None, "n"), Ok(None));
        assert_eq!(int(Some("{}"), "n"), Ok(None));
        assert_eq!(int(Some(r#"{"m": 1}"#), "n"), Ok(None));
        assert_eq!(int(Some("[1, 2]"), "n"), Ok(None));
        assert_eq!(int(Some("7"), "n"), Ok(None));
        assert_eq!(int(Some(""), "n"), Ok(None));
    }

    #[test]
    fn int_ignores_the_key_where_it_is_not_a_top_level_field() {
        let payload = Some(r#"{"name": "n", "inner": {"n": 5}, "list": [{"n": 6}], "n": 7}"#);
        assert_eq!(int(payload, "n"), Ok(Some(7)));
        let payload = Some(r#"{"text": "say \"n\": 1", "other": 2}"#);
        assert_eq!(int(payload, "n"), Ok(None));
        assert_eq!(int(payload, "other"), Ok(Some(2)));
    }

    #[test]
    fn int_refuses_what_is_not_an_integer() {
        for payload in [
            r#"{"n": "5"}"#,
            r#"{"n": 1.5}"#,
            r#"{"n": 1e3}"#,
            r#"{"n": null}"#,
            r#"{"n": true}"#,
            r#"{"n": -}"#,
            r#"{"n": [1]}"#,
        ] {
            assert_eq!(int(Some(payload), "n"), Err("not an integer"), "{payload}");
        }
        assert_eq!(
            int(Some(r#"{"n": 9223372036854775808}"#), "n"),
            Err("integer out of range")
        );
        assert_eq!(
            int(Some(r#"{"n": -9223372036854775809}"#), "n"),
            Err("integer out of range")
        );
    }

    #[test]
    fn string_reads_a_top_level_string() {
        let payload = Some(r#"{"to": "name:hub", "n": 1, "empty": ""}"#);
        assert_eq!(string(payload, "to"), Some("name:hub"));
        assert_eq!(string(payload, "empty"), Some(""));
        assert_eq!(string(payload, "n"), None);
        assert_eq!(string(payload, "missing"), None);
        assert_eq!(string(None, "to"), None);
        assert_eq!(string(Some(r#"{"q": "a \"b\""}"#), "q"), Some(r#"a \"b\""#));
    }

    #[test]
    fn malformed_text_has_no_fields() {
        for payload in [
            "{",
            r#"{"n""#,
            r#"{"n" 1}"#,
            r#"{"a": 1 "n": 2}"#,
            r#"{"a": [1, "n": 2}"#,
        ] {
            assert_eq!(int(Some(payload), "n"), Ok(None), "{payload}");
        }
    }
}
