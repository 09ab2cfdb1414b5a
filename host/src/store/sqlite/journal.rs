//! The journal's form: what one commit of the writer appends, as one value.
//!
//! A commit's task changes are written as one row of the `journal` table, appended at its end,
//! instead of as rows of `tasks` and `log_parts` spread over their B-trees: the task rows are
//! written later, many at a time and in pid order ([`super::unwritten`]). The value holds, for
//! each task the commit changed, the task's whole row as it stands after the commit (an
//! [`Image`]) and the log lines the commit added to it, so that reading the journal back
//! (after a crash) needs nothing but the last image of each task and its lines in order.
//!
//! The value is `FORM` (one byte), then the entries, each: the pid; the record's fields; what
//! the task needs to run again ([`TaskSpec`]); its new lines in [`lines_blob`] form. Integers
//! are little-endian; strings are a `u32` length and UTF-8; an optional value is a byte, 0 or
//! 1, and the value; statuses, outcomes and the loss policy are written by name, and the
//! attempts before the current one as the `attempts` column holds them.
//!
//! [`lines_blob`]: super::super::columns::lines_blob

use std::time::SystemTime;

use super::super::columns::{attempts_json, attempts_of, nanos, status_of, time};
use crate::model::{OnHostLoss, Outcome, Pid, TaskRecord, TaskSpec};

/// The form written; a value of another form is refused when read.
const FORM: u8 = 1;

/// A task's row as the store holds it: its record and what it needs to run again.
#[derive(Debug, Clone)]
pub(super) struct Image {
    pub record: TaskRecord,
    pub spec: TaskSpec,
}

/// One entry read back: a task's image, and the lines (in `lines_blob` form) its commit added.
pub(super) struct Entry {
    pub image: Image,
    pub lines: Vec<u8>,
}

/// Starts a journal value.
pub(super) fn begin() -> Vec<u8> {
    vec![FORM]
}

/// Appends `image` with the `lines` (in `lines_blob` form) its commit added.
pub(super) fn put(out: &mut Vec<u8>, image: &Image, lines: &[u8]) {
    let Image { record, spec } = image;
    out.extend_from_slice(&record.pid.boot().to_le_bytes());
    out.extend_from_slice(&record.pid.seq().to_le_bytes());
    match record.parent {
        Some(parent) => {
            out.push(1);
            out.extend_from_slice(&parent.boot().to_le_bytes());
            out.extend_from_slice(&parent.seq().to_le_bytes());
        }
        None => out.push(0),
    }
    put_str(out, &record.name);
    put_str(out, &record.worker);
    put_str(out, &record.version);
    put_str(out, record.status.as_str());
    out.extend_from_slice(&record.duration.to_le_bytes());
    out.extend_from_slice(&record.step.to_le_bytes());
    out.extend_from_slice(&record.steps.to_le_bytes());
    put_opt(out, record.exit_code, |out, code| {
        out.extend_from_slice(&code.to_le_bytes());
    });
    put_opt(out, record.outcome, |out, outcome| {
        put_str(out, outcome.as_str())
    });
    put_opt(out, record.error.as_deref(), put_str);
    put_time(out, record.spawned_at);
    put_opt(out, record.started_at, put_time);
    put_opt(out, record.ended_at, put_time);
    out.extend_from_slice(&record.fuel_consumed.to_le_bytes());
    out.extend_from_slice(&record.attempt.to_le_bytes());
    if record.attempts.is_empty() {
        put_str(out, "");
    } else {
        put_str(out, &attempts_json(&record.attempts));
    }
    out.extend_from_slice(&record.logs_dropped_bytes.to_le_bytes());
    put_str(out, &spec.module_sha256);
    put_opt(out, spec.payload.as_deref(), put_str);
    out.extend_from_slice(&spec.deadline_secs.to_le_bytes());
    out.extend_from_slice(&spec.max_attempts.to_le_bytes());
    put_str(out, spec.on_host_loss.as_str());
    put_opt(out, spec.ready_at, put_time);
    out.extend_from_slice(&u32::try_from(lines.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(lines);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_time(out: &mut Vec<u8>, at: SystemTime) {
    out.extend_from_slice(&nanos(at).to_le_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => {
            out.push(1);
            put(out, value);
        }
        None => out.push(0),
    }
}

/// The entries of a journal value, in the order they were written; why not, for a value cut
/// short or not of this form.
pub(super) fn entries(value: &[u8]) -> Result<Vec<Entry>, String> {
    let mut take = Take { rest: value };
    if take.bytes(1)? != [FORM] {
        return Err("a journal entry of an unknown form".into());
    }
    let mut entries = Vec::new();
    while !take.rest.is_empty() {
        entries.push(take.entry()?);
    }
    Ok(entries)
}

struct Take<'a> {
    rest: &'a [u8],
}

impl<'a> Take<'a> {
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < len {
            return Err("a journal entry cut short".into());
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn time(&mut self) -> Result<SystemTime, String> {
        Ok(time(i64::from_le_bytes(self.array()?)))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a journal entry's text is not UTF-8".into())
    }

    fn opt<T>(
        &mut self,
        take: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.array::<1>()? {
            [0] => Ok(None),
            [1] => take(self).map(Some),
            _ => Err("a journal entry's optional value is neither absent nor present".into()),
        }
    }

    fn pid(&mut self) -> Result<Pid, String> {
        let boot = self.u32()?;
        Ok(Pid::new(boot, self.u64()?))
    }

    fn entry(&mut self) -> Result<Entry, String> {
        let pid = self.pid()?;
        let parent = self.opt(Self::pid)?;
        let name = self.string()?;
        let worker = self.string()?;
        let version = self.string()?;
        let mut record = TaskRecord::spawned(pid, name, 0, worker.into(), version.into());
        record.parent = parent;
        record.status = status_of(&self.string()?);
        record.duration = self.u32()?;
        record.step = self.u32()?;
        record.steps = self.u32()?;
        record.exit_code = self.opt(Self::i32)?;
        record.outcome = self
            .opt(Self::string)?
            .map(|name| Outcome::parse(&name).ok_or("a journal entry's outcome is unknown"))
            .transpose()?;
        record.error = self.opt(Self::string)?;
        record.spawned_at = self.time()?;
        record.started_at = self.opt(Self::time)?;
        record.ended_at = self.opt(Self::time)?;
        record.fuel_consumed = self.u64()?;
        record.attempt = self.u32()?;
        let attempts = self.string()?;
        if !attempts.is_empty() {
            record.attempts = attempts_of(&attempts);
        }
        record.logs_dropped_bytes = self.u64()?;
        let spec = TaskSpec {
            module_sha256: self.string()?,
            payload: self.opt(Self::string)?,
            deadline_secs: self.u32()?,
            max_attempts: self.u32()?,
            on_host_loss: OnHostLoss::parse(&self.string()?).unwrap_or(OnHostLoss::Restart),
            ready_at: self.opt(Self::time)?,
        };
        let len = self.u32()? as usize;
        let lines = self.bytes(len)?.to_vec();
        Ok(Entry {
            image: Image { record, spec },
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::model::{Attempt, LogLine, LogSource, Status};
    use crate::store::columns::{lines_blob, lines_of};

    fn image(seq: u64) -> Image {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_007 + seq);
        let mut record = TaskRecord::spawned(
            Pid::new(3, seq),
            format!("t{seq} é"),
            5,
            "w".into(),
            "v".into(),
        );
        record.spawned_at = at;
        Image {
            record,
            spec: TaskSpec {
                module_sha256: "ab".repeat(32),
                payload: None,
                deadline_secs: 30,
                max_attempts: 1,
                on_host_loss: OnHostLoss::Restart,
                ready_at: None,
            },
        }
    }

    /// Every field of a record and spec, set and unset, reads back as written; a value cut
    /// anywhere short is refused, never read as something else.
    #[test]
    fn entries_read_back_as_written_and_a_cut_value_is_refused() {
        let plain = image(1);
        let mut full = image(2);
        let at = full.record.spawned_at;
        let record = &mut full.record;
        record.parent = Some(Pid::new(9, u64::MAX));
        record.status = Status::Failed;
        record.step = 4;
        record.steps = 7;
        record.exit_code = Some(-3);
        record.outcome = Some(Outcome::GuestError);
        record.error = Some("boom\nbang".into());
        record.started_at = Some(at + Duration::from_millis(1));
        record.ended_at = Some(at + Duration::from_millis(2));
        record.fuel_consumed = u64::MAX;
        record.attempt = 2;
        record.attempts = vec![Attempt {
            attempt: 1,
            status: Status::Failed,
            outcome: Outcome::Trap,
            exit_code: None,
            error: Some("trap".into()),
            ended_at: at,
        }];
        record.logs_dropped_bytes = 12;
        full.spec.payload = Some("{\"a\":1}".into());
        full.spec.on_host_loss = OnHostLoss::Fail;
        full.spec.ready_at = Some(at + Duration::from_secs(3));
        let line = LogLine {
            at,
            source: LogSource::Stderr,
            message: "a line".into(),
        };
        let lines = lines_blob([&line, &line]);
        let mut value = begin();
        put(&mut value, &plain, &[]);
        put(&mut value, &full, &lines);
        let read = entries(&value).expect("read back");
        assert_eq!(read.len(), 2);
        for (read, (written, lines)) in read.iter().zip([(&plain, &[][..]), (&full, &lines[..])]) {
            assert_eq!(
                format!("{:?}", read.image.record),
                format!("{:?}", written.record)
            );
            assert_eq!(read.image.spec, written.spec);
            assert_eq!(read.lines, lines);
        }
        let mut back = Vec::new();
        lines_of(&read[1].lines, &mut back);
        assert_eq!(back.len(), 2);
        // A value cut between entries holds those before; cut anywhere else, it is refused.
        let mut first = begin();
        put(&mut first, &plain, &[]);
        for cut in 1..value.len() {
            match entries(&value[..cut]) {
                Ok(read) => assert!(
                    (cut == 1 && read.is_empty()) || (cut == first.len() && read.len() == 1),
                    "cut at {cut}"
                ),
                Err(_) => assert!(cut != 1 && cut != first.len(), "cut at {cut}"),
            }
        }
        assert!(entries(&[]).is_err());
        assert!(entries(&[FORM + 1]).is_err());
    }
}
