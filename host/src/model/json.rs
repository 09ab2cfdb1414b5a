//! A task's result: JSON text a guest returned, checked once as it arrives and then kept and
//! written out as it came, never parsed again.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// A piece of JSON text, known to be valid, shared by every copy of the record that holds it.
#[derive(Clone)]
pub struct JsonText(Arc<RawValue>);

impl JsonText {
    /// `text` if it is one JSON value; whitespace around it is allowed, and dropped. Read as
    /// a value too, once: the raw text's check alone lets through what cannot be read as one (a
    /// number out of range such as `1e400`, nesting past 128 levels), which would fail later,
    /// wherever the result is written into other JSON.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde_json::Value>(&text)?;
        RawValue::from_string(text).map(|raw| Self(Arc::from(raw)))
    }

    /// The text as it came.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Whether it is empty (never: empty text is not JSON).
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for JsonText {}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_checked_once_and_written_as_it_came() {
        let text = JsonText::parse(r#" {"a": [1, 2.50]} "#.into()).expect("JSON");
        // Whitespace around the value is dropped; the value is kept as it was written.
        assert_eq!(text.as_str(), r#"{"a": [1, 2.50]}"#);
        assert_eq!(
            serde_json::to_string(&serde_json::json!({ "result": text })).expect("written"),
            r#"{"result":{"a":[1,2.5]}}"#
        );
        // Written out as it came: no second parse, no normalising.
        assert_eq!(
            serde_json::to_string(&[Some(&text), None]).expect("written"),
            r#"[{"a": [1, 2.50]},null]"#
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for bad in ["", "{", "1 2", "nul", "[1,]", "1e400", &deep] {
            assert!(JsonText::parse(bad.into()).is_err(), "{bad:?}");
        }
    }
}
