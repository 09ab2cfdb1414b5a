//! A task's process id, and where a host gets new ones.

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Serialize, Serializer};

/// A task's process id: its host's boot id and a sequence number that never repeats while the
/// host runs. Written `<boot:8 hex>-<seq:hex>`, which is URL-safe.
///
/// The boot id keeps pids of different hosts (or of one host across restarts) apart, so that a
/// store shared by several hosts can answer for any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    boot: u32,
    seq: u64,
}

impl Pid {
    /// The pid of the `seq`-th task of the host whose boot id is `boot`.
    pub fn new(boot: u32, seq: u64) -> Self {
        Self { boot, seq }
    }

    /// The boot id of the host that gave it out.
    pub fn boot(self) -> u32 {
        self.boot
    }

    /// The sequence number, unique among this host's pids.
    pub fn seq(self) -> u64 {
        self.seq
    }
}

impl fmt::Display for Pid {
    /// `{boot:08x}-{seq:x}`, written by hand: every log line and answer about a task shows
    /// its pid, and the formatting machinery's padding costs more than the digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Eight digits of boot, a dash, at most sixteen of seq.
        let mut text = [0u8; 25];
        for (i, shift) in (0..8).rev().enumerate() {
            text[i] = HEX[((u64::from(self.boot) >> (4 * shift)) & 0xf) as usize];
        }
        text[8] = b'-';
        let digits = (64 - self.seq.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            text[9 + i] = HEX[((self.seq >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        let text = std::str::from_utf8(&text[..9 + digits]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

impl FromStr for Pid {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical form parses, so each pid has exactly one spelling.
        fn hex(part: &str, max_len: usize) -> Result<u64, ()> {
            let canonical = !part.is_empty()
                && part.len() <= max_len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && (part == "0" || !part.starts_with('0') || max_len == 8);
            if !canonical {
                return Err(());
            }
            u64::from_str_radix(part, 16).map_err(|_| ())
        }
        let (boot, seq) = s.split_once('-').ok_or(())?;
        if boot.len() != 8 {
            return Err(());
        }
        Ok(Self {
            boot: u32::try_from(hex(boot, 8)?).map_err(|_| ())?,
            seq: hex(seq, 16)?,
        })
    }
}

impl Serialize for Pid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Hands out pids: this host's boot id and a counter that never wraps in practice. The boot id
/// is random for a host alone, and its id in the cluster for a host of one, which changes if it
/// has to join again.
#[derive(Debug)]
pub(crate) struct Pids {
    boot: AtomicU32,
    next: AtomicU64,
}

impl Pids {
    pub(crate) fn new() -> Self {
        // RandomState is seeded from the OS's randomness, once per process.
        Self::with_boot(RandomState::new().hash_one(std::process::id()) as u32)
    }

    /// Pids of boot id `boot`, which no other host gives out.
    pub(crate) fn with_boot(boot: u32) -> Self {
        Self {
            boot: AtomicU32::new(boot),
            next: AtomicU64::new(1),
        }
    }

    /// This host's boot id.
    pub(crate) fn boot(&self) -> u32 {
        self.boot.load(Ordering::Acquire)
    }

    /// Gives out pids of boot id `boot` from now on: a host of a cluster that joined again.
    pub(crate) fn set_boot(&self, boot: u32) {
        self.boot.store(boot, Ordering::Release);
    }

    /// Hands out sequence numbers after `seq`: a store that already holds pids of a boot with
    /// the same id (one chance in four billion) never sees one twice.
    pub(crate) fn after(self, seq: u64) -> Self {
        self.next.store(seq + 1, Ordering::Relaxed);
        self
    }

    pub(crate) fn next(&self) -> Pid {
        Pid::new(self.boot(), self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A map keyed by pids, hashed by [`PidHasher`].
pub(crate) type PidMap<V> = std::collections::HashMap<Pid, V, BuildHasherDefault<PidHasher>>;

/// A hasher for maps keyed by pids, for the store's writer, which looks up every task it
/// changes. Pids are the hosts' own numbers, never chosen by a client, so they need no guard
/// against keys made to collide: a multiply and rotate per word (as rustc's `FxHasher`) spreads
/// them over the table, where SipHash's guard cost ~20 ns a lookup.
#[derive(Default)]
pub(crate) struct PidHasher(u64);

impl PidHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for PidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, word: u32) {
        self.add(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }

    fn finish(&self) -> u64 {
        // The table takes its slot from the low bits and a tag from the top seven: fold the
        // high half, where the multiply mixed most, into both.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_written_as_its_hex_digits() {
        for (boot, seq) in [
            (0, 0),
            (0, 1),
            (1, 0xf),
            (0x0102_0304, 0x10),
            (u32::MAX, u64::MAX),
            (0xdead_beef, 0x8000_0000_0000_0000),
        ] {
            let pid = Pid::new(boot, seq);
            assert_eq!(pid.to_string(), format!("{boot:08x}-{seq:x}"));
            assert_eq!(pid.to_string().parse::<Pid>(), Ok(pid));
        }
    }

    #[test]
    fn pid_round_trips_and_rejects_non_canonical_forms() {
        let pid = Pid::new(0xdead_beef, 0x1f);
        assert_eq!(pid.to_string(), "deadbeef-1f");
        assert_eq!("deadbeef-1f".parse::<Pid>(), Ok(pid));
        for bad in [
            "",
            "-",
            "deadbeef",
            "deadbeef-",
            "DEADBEEF-1f",
            "1-1f",
            "deadbeef-01f",
            "deadbeef-+1",
            "123456789-1",
            "x-1",
        ] {
            assert!(bad.parse::<Pid>().is_err(), "{bad:?} parsed");
        }
    }
}
