//! How the subcommands print: human tables (colours only on a terminal, and never with
//! `NO_COLOR`), or the host's JSON as it came (`-o json`).

use std::io::IsTerminal as _;
use std::time::SystemTime;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use serde_json::Value;

/// What a subcommand prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and lines for people.
    Table,
    /// The host's JSON, one document (or one per line for a stream).
    Json,
}

/// Whether stdout takes colours: a terminal, and `NO_COLOR` unset (<https://no-color.org>).
pub fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A table with `header`, laid out as `docker ps` lays out its own: no borders.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|title| Cell::new(title.to_uppercase())));
    if !colours() {
        table.force_no_tty();
    }
    table
}

/// Prints `table` without the padding before its first column.
pub fn print_table(table: &Table) {
    for line in table.lines() {
        println!("{}", line.strip_prefix(' ').unwrap_or(&line).trim_end());
    }
}

/// A task's status, coloured by what it means when colours are on.
pub fn status_cell(status: &str) -> Cell {
    let cell = Cell::new(status);
    if !colours() {
        return cell;
    }
    match status {
        "exited" => cell.fg(Color::Green),
        "failed" | "killed" => cell.fg(Color::Red),
        "running" => cell.fg(Color::Cyan),
        _ => cell.fg(Color::Yellow),
    }
}

/// A value as a table cell shows it: text as is, nothing as `-`, the rest as compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// How long ago the RFC 3339 time `at` was, as `docker ps` says it (`5s`, `3m`, `2h`, `4d`);
/// `-` if it does not read.
pub fn age(at: &Value, now: SystemTime) -> String {
    let Some(then) = at
        .as_str()
        .and_then(|at| at.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from)
    else {
        return "-".to_owned();
    };
    let secs = now.duration_since(then).map_or(0, |age| age.as_secs());
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Prints `value` as JSON, indented.
pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints an object's fields as `key: value` lines, nested objects as compact JSON.
pub fn print_fields(value: &Value) {
    let Value::Object(fields) = value else {
        println!("{}", text(value));
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in fields {
        if value.is_null() {
            continue;
        }
        println!("{key:width$}  {}", text(value));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ages_read_as_docker_ps_writes_them() {
        let at = serde_json::json!("2026-12-08T10:00:00Z");
        let then: SystemTime = "2026-12-08T10:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("a time")
            .into();
        assert_eq!(age(&at, then + Duration::from_secs(5)), "5s");
        assert_eq!(age(&at, then + Duration::from_secs(150)), "2m");
        assert_eq!(age(&at, then + Duration::from_secs(7300)), "2h");
        assert_eq!(age(&at, then + Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(age(&at, then - Duration::from_secs(5)), "0s");
        assert_eq!(age(&Value::Null, then), "-");
    }

    #[test]
    fn cells_show_text_plainly_and_nothing_as_a_dash() {
        assert_eq!(text(&serde_json::json!("x")), "x");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(text(&serde_json::json!({"a": [1]})), r#"{"a":[1]}"#);
    }
}
