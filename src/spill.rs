//! Fixed-size records sorted in bounded memory, read back in order as often as asked.
//!
//! [`Spill`] keeps up to a chunk of records in memory; each full chunk is sorted and written
//! as a run to an anonymous temporary file (gone when the last handle closes, even after a
//! kill). [`Sorted`] reads them back in order by merging the runs, a block of each at a
//! time, so memory stays at one chunk however long the list: an estimate of ten million
//! items holds a few tens of MB, not hundreds, and an import checks ten million ids for
//! repeats without an index or a set of them.
//!
//! Not the `extsort` crate: it brings rayon in, and its sorted output can be read once,
//! where an estimate passes over its list once per simulated run.
//!
//! Invariant: every run in the file is sorted; a [`Sorted`] that wrote no run holds all its
//! records in memory, sorted. A write that fails is kept, and [`Spill::finish`] returns it
//! (callers push from inside streaming passes that cannot return an error). A read that
//! fails ends the pass early and is kept too: [`Sorted::read_error`] gives it to the
//! caller, which must not trust a pass that ended so.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::Mutex;

/// A record of fixed size, sorted by its `Ord`.
pub trait Record: Copy + Ord {
    /// Bytes of an encoded record.
    const SIZE: usize;
    /// Writes the record into `out` (`SIZE` bytes).
    fn encode(&self, out: &mut [u8]);
    /// Reads a record from `bytes` (`SIZE` bytes written by [`Record::encode`]).
    fn decode(bytes: &[u8]) -> Self;
}

impl Record for u64 {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        u64::from_le_bytes(b)
    }
}

/// Records per run written when a list outgrows memory: 2^20 (20 to 24 MB of entries).
pub const CHUNK: usize = 1 << 20;

/// Records read from a run at a time while merging.
const BLOCK: usize = 4_096;

/// A sorted stretch of the file, in records.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: u64,
    len: u64,
}

/// Collects records, writing each full chunk sorted to a temporary file.
#[derive(Debug)]
pub struct Spill<T> {
    chunk: usize,
    buffer: Vec<T>,
    file: Option<BufWriter<File>>,
    runs: Vec<Run>,
    written: u64,
    /// The first write that failed: nothing more is kept, and `finish` returns it.
    failed: Option<io::Error>,
}

impl<T: Record> Spill<T> {
    /// A spill that writes a run every `chunk` records (`usize::MAX`: never).
    pub fn new(chunk: usize) -> Spill<T> {
        Spill {
            chunk: chunk.max(1),
            buffer: Vec::new(),
            file: None,
            runs: Vec::new(),
            written: 0,
            failed: None,
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> u64 {
        self.written + self.buffer.len() as u64
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record; a full chunk is sorted and written out. When the temporary file
    /// cannot be made or written, the error is kept for [`Spill::finish`] and later
    /// records are dropped.
    pub fn push(&mut self, record: T) {
        if self.failed.is_some() {
            return;
        }
        self.buffer.push(record);
        if self.buffer.len() >= self.chunk
            && let Err(e) = self.write_run()
        {
            self.failed = Some(e);
        }
    }

    fn write_run(&mut self) -> io::Result<()> {
        self.buffer.sort_unstable();
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(BufWriter::with_capacity(1 << 16, tempfile::tempfile()?)),
        };
        let mut bytes = vec![0u8; T::SIZE];
        for record in &self.buffer {
            record.encode(&mut bytes);
            file.write_all(&bytes)?;
        }
        let len = self.buffer.len() as u64;
        self.runs.push(Run {
            start: self.written,
            len,
        });
        self.written += len;
        self.buffer.clear();
        Ok(())
    }

    /// Every record pushed, sorted.
    ///
    /// # Errors
    /// The first write that failed, or the last run's.
    pub fn finish(mut self) -> io::Result<Sorted<T>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.file.is_some() {
            if !self.buffer.is_empty() {
                self.write_run()?;
            }
            // The chunk's memory goes back: the records are read from the file.
            self.buffer = Vec::new();
        }
        self.buffer.sort_unstable();
        let writer = self.file.take().map(BufWriter::into_inner);
        let file = writer.transpose().map_err(io::IntoInnerError::into_error)?;
        Ok(Sorted {
            len: self.len(),
            memory: self.buffer,
            file,
            runs: self.runs,
            failed: Mutex::new(None),
        })
    }
}

/// Records in sorted order, in memory or in sorted runs on disk.
#[derive(Debug)]
pub struct Sorted<T> {
    memory: Vec<T>,
    file: Option<File>,
    runs: Vec<Run>,
    len: u64,
    /// The first read that failed, if any.
    failed: Mutex<Option<io::Error>>,
}

impl<T: Record> Sorted<T> {
    /// `records`, sorted in memory.
    pub fn from_vec(mut records: Vec<T>) -> Sorted<T> {
        records.sort_unstable();
        Sorted {
            len: records.len() as u64,
            memory: records,
            file: None,
            runs: Vec::new(),
            failed: Mutex::new(None),
        }
    }

    /// Records held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the records are on disk (the list outgrew one chunk).
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// The records in order (a pass over them; there may be any number of passes).
    pub fn iter(&self) -> Iter<'_, T> {
        let mut iter = Iter {
            sorted: self,
            memory: self.memory.iter(),
            readers: Vec::new(),
            heap: BinaryHeap::new(),
        };
        if let Some(file) = &self.file {
            for (i, run) in self.runs.iter().enumerate() {
                let mut reader = RunReader {
                    file,
                    next: run.start,
                    end: run.start + run.len,
                    block: Vec::new(),
                    at: 0,
                };
                match reader.next_record() {
                    Ok(Some(first)) => iter.heap.push(Reverse((first, i))),
                    Ok(None) => {}
                    Err(e) => self.fail(e),
                }
                iter.readers.push(reader);
            }
        }
        iter
    }

    /// The first read that failed in any pass: a pass that met it ended early.
    pub fn read_error(&self) -> Option<io::Error> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }

    fn fail(&self, e: io::Error) {
        if let Ok(mut failed) = self.failed.lock() {
            failed.get_or_insert(e);
        }
    }
}

/// One run being read, a block at a time.
#[derive(Debug)]
struct RunReader<'a, T> {
    file: &'a File,
    /// The next record of the run not yet in `block`.
    next: u64,
    end: u64,
    block: Vec<T>,
    at: usize,
}

impl<T: Record> RunReader<'_, T> {
    fn next_record(&mut self) -> io::Result<Option<T>> {
        if self.at == self.block.len() {
            if self.next == self.end {
                return Ok(None);
            }
            let n = (self.end - self.next).min(BLOCK as u64);
            let mut bytes = vec![0u8; n as usize * T::SIZE];
            read_exact_at(self.file, &mut bytes, self.next * T::SIZE as u64)?;
            self.block.clear();
            self.block
                .extend(bytes.chunks_exact(T::SIZE).map(T::decode));
            self.next += n;
            self.at = 0;
        }
        let record = self.block[self.at];
        self.at += 1;
        Ok(Some(record))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// A pass over a [`Sorted`]: its records in order.
#[derive(Debug)]
pub struct Iter<'a, T> {
    sorted: &'a Sorted<T>,
    memory: std::slice::Iter<'a, T>,
    readers: Vec<RunReader<'a, T>>,
    /// The next record of each run not yet taken, smallest on top.
    heap: BinaryHeap<Reverse<(T, usize)>>,
}

impl<T: Record> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.sorted.file.is_none() {
            return self.memory.next().copied();
        }
        let Reverse((record, run)) = self.heap.pop()?;
        match self.readers[run].next_record() {
            Ok(Some(next)) => self.heap.push(Reverse((next, run))),
            Ok(None) => {}
            Err(e) => {
                self.sorted.fail(e);
                self.heap.clear();
            }
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(values: &[u64], chunk: usize) -> Sorted<u64> {
        let mut spill = Spill::new(chunk);
        for &v in values {
            spill.push(v);
        }
        spill.finish().unwrap()
    }

    #[test]
    fn runs_on_disk_merge_into_the_same_order_as_one_sort_in_memory() {
        // A fixed pseudo-random list, with repeats, over several runs and a short last one.
        let mut x = 7u64;
        let values: Vec<u64> = (0..10_007)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 40) % 3_000
            })
            .collect();
        let mut expected = values.clone();
        expected.sort_unstable();
        let on_disk = sorted(&values, 1_000);
        assert!(on_disk.spilled(), "11 runs were written");
        assert_eq!(on_disk.len(), 10_007);
        for pass in 0..2 {
            let got: Vec<u64> = on_disk.iter().collect();
            assert_eq!(got, expected, "pass {pass}");
        }
        assert!(on_disk.read_error().is_none());
        let in_memory = sorted(&values, usize::MAX);
        assert!(!in_memory.spilled());
        assert_eq!(in_memory.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn a_list_of_exactly_one_chunk_and_an_empty_one() {
        let one = sorted(&[3, 1, 2], 3);
        assert_eq!(one.iter().collect::<Vec<_>>(), [1, 2, 3]);
        let none = sorted(&[], 3);
        assert!(none.is_empty());
        assert_eq!(none.iter().count(), 0);
    }
}
