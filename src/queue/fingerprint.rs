//! A work list's fingerprint: how a rerun knows the list is the one its db was imported
//! from without reading it again.
//!
//! The fingerprint is the file's size, its modification time and a SHA-256 over the size
//! and 64 sampled 4 KiB blocks (the first, the last and 62 spread evenly between), about
//! 256 KiB read whatever the list's size. At import the whole file's SHA-256 is stored too.
//! A rerun compares them:
//! - a different size, or a different byte in any sampled block: changed (refused);
//! - same size, same samples and same modification time: unchanged, nothing more is read;
//! - same size and samples but another modification time (the file was rewritten, touched
//!   or copied): the whole file is hashed and compared with the stored SHA-256.
//!
//! So every edit is caught except one that keeps the size, misses every sampled block *and*
//! restores the modification time (`touch -r`, or a tool preserving it); `run --verify`
//! hashes the whole file anyway and catches that too. A db from before sampled
//! fingerprints holds the whole file's SHA-256 as its fingerprint and is checked that way.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Blocks sampled, the first and the last included.
const SAMPLES: u64 = 64;

/// Bytes per sampled block.
const BLOCK: u64 = 4096;

/// The prefix of a sampled fingerprint's identity.
const SAMPLED: &str = "sampled:";

/// A work list's size, modification time and sampled-blocks hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when the system has none).
    pub mtime_ns: u128,
    /// SHA-256 (hex) over the size and the sampled blocks.
    pub sampled: String,
}

/// What the db recorded of the work list it was imported from (`meta` values).
#[derive(Clone, Copy, Debug)]
pub struct Stored<'a> {
    /// The fingerprint identity (shard suffix included, if any).
    pub identity: &'a str,
    /// The modification time at import, in nanoseconds.
    pub mtime_ns: Option<&'a str>,
    /// The whole file's SHA-256 at import.
    pub content: Option<&'a str>,
}

impl Fingerprint {
    /// Reads the fingerprint of the file at `path` (at most 64 blocks of 4 KiB).
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn of(path: &Path) -> io::Result<Fingerprint> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let size = meta.len();
        let mtime_ns = (meta.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut hasher = Sha256::new();
        hasher.update(size.to_le_bytes());
        let mut block = vec![0u8; BLOCK as usize];
        let last = size.saturating_sub(BLOCK);
        let mut previous = None;
        for i in 0..SAMPLES {
            // Spread evenly from the first block to the last, both included.
            let at = u64::try_from(u128::from(last) * u128::from(i) / u128::from(SAMPLES - 1))
                .unwrap_or(last);
            if previous == Some(at) {
                continue;
            }
            previous = Some(at);
            file.seek(SeekFrom::Start(at))?;
            let n = read_full(&mut file, &mut block)?;
            hasher.update(&block[..n]);
        }
        Ok(Fingerprint {
            size,
            mtime_ns,
            sampled: hex(&hasher.finalize()),
        })
    }

    /// The identity a db is bound to: size and sampled hash (the modification time is
    /// kept apart: touching a file does not change what it holds).
    pub fn identity(&self) -> String {
        format!("{SAMPLED}{}:{}", self.size, self.sampled)
    }

    /// Whether the file this fingerprint was read from is the one `stored` describes, with
    /// `suffix` (a shard) appended to identities; `verify` hashes the whole file even when
    /// nothing suggests a change. Reads the whole file only when the modification time
    /// moved, when `verify` is set, or for a db bound by a whole-file hash.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn matches(
        &self,
        path: &Path,
        stored: Stored<'_>,
        suffix: &str,
        verify: bool,
    ) -> io::Result<bool> {
        if !stored.identity.starts_with(SAMPLED) {
            return Ok(format!("{}{suffix}", content_hash(path)?) == stored.identity);
        }
        if format!("{}{suffix}", self.identity()) != stored.identity {
            return Ok(false);
        }
        if !verify && stored.mtime_ns == Some(self.mtime_ns.to_string().as_str()) {
            return Ok(true);
        }
        Ok(stored.content == Some(content_hash(path)?.as_str()))
    }
}

/// The SHA-256 (hex) of the whole file at `path`.
///
/// # Errors
/// When the file cannot be read.
pub fn content_hash(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored<'a>(fp: &'a str, mtime: &'a str, content: &'a str) -> Stored<'a> {
        Stored {
            identity: fp,
            mtime_ns: Some(mtime),
            content: Some(content),
        }
    }

    #[test]
    fn an_edit_anywhere_is_caught_and_a_touch_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv");
        let text: String = (0..50_000)
            .map(|i| format!("item-{i},{}\n", i % 7))
            .collect();
        std::fs::write(&path, &text).unwrap();
        let fp = Fingerprint::of(&path).unwrap();
        let (id, mtime, content) = (
            fp.identity(),
            fp.mtime_ns.to_string(),
            content_hash(&path).unwrap(),
        );
        let same = |verify| {
            let now = Fingerprint::of(&path).unwrap();
            now.matches(&path, stored(&id, &mtime, &content), "", verify)
                .unwrap()
        };
        assert!(same(false) && same(true));
        // The same bytes written again: a new modification time, the whole file rehashed.
        std::fs::write(&path, &text).unwrap();
        assert!(same(false), "rewritten unchanged");
        // One byte changed in the middle, outside any sampled block maybe: the time moved.
        let mut edited = text.into_bytes();
        edited[123_457] = b'9';
        std::fs::write(&path, &edited).unwrap();
        assert!(!same(false), "an edit of one byte");
        assert!(
            !Fingerprint::of(&path)
                .unwrap()
                .matches(&path, stored(&id, &mtime, &content), "#shard=1/2", false)
                .unwrap()
        );
    }

    #[test]
    fn a_db_bound_by_a_whole_file_hash_is_checked_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv");
        std::fs::write(&path, "id\na\n").unwrap();
        let legacy = content_hash(&path).unwrap();
        let fp = Fingerprint::of(&path).unwrap();
        let old = Stored {
            identity: &legacy,
            mtime_ns: None,
            content: None,
        };
        assert!(fp.matches(&path, old, "", false).unwrap());
        std::fs::write(&path, "id\nb\n").unwrap();
        assert!(
            !Fingerprint::of(&path)
                .unwrap()
                .matches(&path, old, "", false)
                .unwrap()
        );
    }
}
