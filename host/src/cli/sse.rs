//! Server-Sent Events as the WHATWG HTML standard parses them, for the client subcommands that
//! follow a stream (`logs -f`, `events`): bytes in, in whatever pieces they come, events out.

/// One event: its `event` field (`message` when it has none) and its `data` lines joined by
/// newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The parser's state between two pieces of the stream.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// A `\r` ended the last line: a `\n` right after it ends nothing more.
    after_cr: bool,
    event: String,
    data: String,
    /// Whether the event being read has had a `data` field.
    has_data: bool,
}

impl SseParser {
    /// Reads `bytes`, the next piece of the stream: the events it completes.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_ended(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(byte);
                }
            }
        }
        events
    }

    /// Acts on one whole line: a blank one dispatches the event read so far.
    fn line_ended(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                data,
            });
        }
        let line = String::from_utf8_lossy(line);
        // A comment (a keep-alive).
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` mean nothing to a client that does not reconnect.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_read_whatever_pieces_the_stream_comes_in() {
        let stream = b": keep-alive\n\nevent: log\ndata: {\"a\":1}\n\nevent: exit\r\ndata:x\r\ndata: y\r\n\r\ndata: plain\nid: 7\n\n";
        let expected = [
            event("log", "{\"a\":1}"),
            event("exit", "x\ny"),
            event("message", "plain"),
        ];
        // Whole, and byte by byte (a `\r\n` split between two pieces included).
        assert_eq!(SseParser::default().feed(stream), expected);
        let mut parser = SseParser::default();
        let events: Vec<SseEvent> = stream
            .iter()
            .flat_map(|byte| parser.feed(std::slice::from_ref(byte)))
            .collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_a_cut_one_waits() {
        let mut parser = SseParser::default();
        assert_eq!(parser.feed(b"event: lonely\n\n"), []);
        assert_eq!(parser.feed(b"data: half"), []);
        assert_eq!(parser.feed(b"\n\n"), [event("message", "half")]);
    }
}
