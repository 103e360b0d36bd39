//! The work list: a CSV or JSONL file streamed into validated [`Item`]s.
//!
//! Owns reading the file, the reserved fields (`id`, `priority`, `tokens`, `kind`, `tenant`)
//! and every check on them; each problem is a [`WorklistError`] naming the file, the line
//! and the field, with a hint. Rendering requests from an item is left to `job`, storing
//! items to `store`.
//!
//! Invariants:
//! - Streaming: one record is in memory at a time (plus the set of ids seen, to refuse
//!   duplicates, unless [`WorklistReader::without_id_check`] leaves that to the caller,
//!   which sorts id hashes). A bad record yields its `Err` and reading goes on with the
//!   next, so the caller can report every problem; an I/O error is yielded once and ends
//!   the iteration.
//! - `seq` counts every record in file order, bad ones included, so a derived id (the 1-based
//!   record number) is the same on every read of the same file.
//! - An item's `Payload::Vars` holds every field of its record, reserved ones included, plus
//!   the derived `id` when the record has none, so `{{id}}` always renders.
//!
//! JSONL lines in OpenAI's Batch input format
//! (<https://platform.openai.com/docs/guides/batch>) are recognised by their `custom_id`.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One record of the work list, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 0-based record index in file order (blank JSONL lines are not records).
    pub seq: u64,
    /// 1-based line where the record starts.
    pub line: u64,
    /// Unique in the work list; the 1-based record number when the record has no id.
    pub id: String,
    /// Higher runs first; 0 when not given.
    pub priority: i64,
    /// Estimated tokens, overriding the estimate from the request body.
    pub tokens: Option<u64>,
    /// What to send.
    pub payload: Payload,
}

/// What an item asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Template variables: every field of the record (reserved ones included, so `{{id}}` works). CSV values are strings; JSONL values keep their JSON type.
    Vars(Map<String, Value>),
    /// A line in OpenAI's Batch input format, sent as it stands.
    Batch {
        /// HTTP method, as written.
        method: String,
        /// Path and query relative to the API's base URL, starting with `/`.
        url: String,
        /// The request body, a JSON object.
        body: Value,
    },
}

impl Payload {
    /// Appends the payload as JSON text, byte for byte what `serde_json` writes for it
    /// (`{"Vars":{...}}` or `{"Batch":{...}}`); the import writes millions of them, so text
    /// values are escaped by runs instead of one byte at a time.
    pub fn write_json(&self, out: &mut String) {
        let Payload::Vars(vars) = self else {
            // Serializing a JSON value into memory cannot fail.
            out.push_str(&serde_json::to_string(self).unwrap_or_default());
            return;
        };
        out.push_str("{\"Vars\":{");
        for (i, (name, value)) in vars.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            crate::template::push_json_escaped(out, name);
            out.push_str("\":");
            match value {
                Value::String(text) => {
                    out.push('"');
                    crate::template::push_json_escaped(out, text);
                    out.push('"');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        out.push_str("}}");
    }
}

/// The work list's file format, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.csv`: a header row, then one item per row.
    Csv,
    /// `.jsonl` or `.ndjson`: one JSON object per line.
    Jsonl,
}

impl Format {
    /// The format for `path`'s extension (case-insensitive).
    ///
    /// # Errors
    /// [`WorklistError::UnknownFormat`] for any other extension, or none.
    pub fn from_path(path: &Path) -> Result<Format, WorklistError> {
        let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        match extension.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
            _ => Err(WorklistError::UnknownFormat {
                path: path.to_path_buf(),
                extension,
            }),
        }
    }
}

/// A problem with the work list. Displays as `FILE:LINE: problem` and an indented hint.
///
/// Every variant carries the work list's `path`; `line` is the 1-based line where the bad
/// record (or the CSV header) starts.
#[derive(Debug, thiserror::Error)]
pub enum WorklistError {
    /// The file cannot be opened.
    #[error("{path}: cannot open the work list\n  hint: {}", open_hint(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file (a directory, a device such as `/dev/zero`, a pipe),
    /// following symlinks: reading it could fail, never end, or differ between passes.
    #[error(
        "{path}: the work list is not a regular file ({kind})\n  hint: pass the path of a .csv or .jsonl file; copy a stream to a file first"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    /// A CSV quote opened on `line` is never closed: it would swallow the rest of the file
    /// into one value.
    #[error(
        "{path}:{line}: a quote opened here is never closed, so the rest of the file would be one value\n  hint: close the quote, or double a quote inside a quoted value (`\"a \"\"b\"\" c\"`)"
    )]
    UnterminatedQuote { path: PathBuf, line: u64 },
    /// The extension (lower-cased, if any) names no known format.
    #[error("{path}: {}\n  hint: {FORMAT_HINT}", extension_problem(extension.as_deref()))]
    UnknownFormat {
        path: PathBuf,
        extension: Option<String>,
    },
    /// Reading failed part-way; iteration ends after this error.
    #[error("{path}:{line}: cannot read the work list\n  hint: {READ_HINT}")]
    Read {
        path: PathBuf,
        line: u64,
        #[source]
        source: io::Error,
    },
    /// Two CSV header columns (1-based positions `first` and `second`) share a name.
    #[error(
        "{path}:{line}: column `{column}` appears twice in the header (columns {first} and {second})\n  hint: {COLUMN_HINT}"
    )]
    DuplicateColumn {
        path: PathBuf,
        line: u64,
        column: String,
        first: usize,
        second: usize,
    },
    /// A CSV row has `found` fields where the header has `expected`.
    #[error(
        "{path}:{line}: row has {found} fields, the header has {expected}\n  hint: {RAGGED_HINT}"
    )]
    RaggedRow {
        path: PathBuf,
        line: u64,
        found: u64,
        expected: u64,
    },
    /// Bytes that are not UTF-8, in a CSV `field`, or anywhere in a JSONL line or CSV header
    /// (`field` is `None`).
    #[error("{path}:{line}: {} is not valid UTF-8\n  hint: {UTF8_HINT}", utf8_subject(field.as_deref()))]
    NotUtf8 {
        path: PathBuf,
        line: u64,
        field: Option<String>,
    },
    /// A JSONL line is not valid JSON: serde_json's `reason` and 1-based `column`.
    #[error("{path}:{line}:{column}: the line is not valid JSON: {reason}\n  hint: {JSONL_HINT}")]
    InvalidJson {
        path: PathBuf,
        line: u64,
        column: usize,
        reason: String,
    },
    /// A JSONL line is valid JSON but not an object; `found` is its type (`an array`, ...).
    #[error("{path}:{line}: the line is {found}, not a JSON object\n  hint: {JSONL_HINT}")]
    NotAnObject {
        path: PathBuf,
        line: u64,
        found: &'static str,
    },
    /// An id (`field` is `id`, or `custom_id` on a Batch line) is empty or blank.
    #[error("{path}:{line}: `{field}` is empty\n  hint: {}", id_hint(field))]
    EmptyId {
        path: PathBuf,
        line: u64,
        field: &'static str,
    },
    /// An id is already used by the record starting on `first_line`.
    #[error(
        "{path}:{line}: {field} `{id}` is already used on line {first_line}\n  hint: {DUPLICATE_HINT}"
    )]
    DuplicateId {
        path: PathBuf,
        line: u64,
        field: &'static str,
        id: String,
        first_line: u64,
    },
    /// A reserved or Batch field has the wrong type or value. `found` is ready to print: a
    /// short value in backticks, or a type (`an object`, `nothing`), never a whole body.
    #[error(
        "{path}:{line}: `{field}` must be {expected}, found {found}\n  hint: {}",
        field_hint(field)
    )]
    InvalidField {
        path: PathBuf,
        line: u64,
        field: &'static str,
        expected: &'static str,
        found: String,
    },
}

const JSONL_HINT: &str = "each line of a JSONL work list is one JSON object, like \
     `{\"id\": \"a1\", \"prompt\": \"...\"}`; blank lines are skipped";
const UTF8_HINT: &str = "re-save the file as UTF-8 (for example \
     `iconv -f WINDOWS-1252 -t UTF-8 in.csv > out.csv`)";
const BATCH_HINT: &str = "a line with `custom_id` is an OpenAI Batch request: `{\"custom_id\": \
     \"r1\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {...}}`";
const FORMAT_HINT: &str = "name the file `.csv` (a header row, then one item per row) or \
     `.jsonl` / `.ndjson` (one JSON object per line)";
const READ_HINT: &str = "check that the file is readable and not being written to";
const COLUMN_HINT: &str =
    "rename one of them; each column is a template variable and needs its own name";
const RAGGED_HINT: &str = "quote values that hold commas or line breaks (`\"a, b\"`, with \
     `\"\"` for a quote inside) so each row has one value per column";
const DUPLICATE_HINT: &str =
    "ids must be unique so that a resumed run can tell items apart; rename one of them";

/// A hash of an item's id that is the same in every process: a list's ids are checked for
/// repeats by sorting these (on disk beyond a chunk), then comparing the ids of equal
/// hashes only.
pub fn id_hash(id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

/// The hashes that come more than once in `sorted` (ascending), each once.
pub fn repeats(sorted: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last = None;
    for h in sorted {
        if last == Some(h) && out.last() != Some(&h) {
            out.push(h);
        }
        last = Some(h);
    }
    out
}

fn utf8_subject(field: Option<&str>) -> String {
    field.map_or_else(|| "the line".to_owned(), |f| format!("field `{f}`"))
}

fn open_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::NotFound => "check the path; a relative path starts from the current folder",
        io::ErrorKind::PermissionDenied => "make the file readable by this user",
        _ => "check that the path names a readable file",
    }
}

fn extension_problem(extension: Option<&str>) -> String {
    match extension {
        Some(e) => format!("unknown work-list extension `.{e}`"),
        None => "the work list has no extension to tell its format".to_owned(),
    }
}

fn id_hint(field: &str) -> &'static str {
    if field == "custom_id" {
        "give every Batch line a unique, non-empty `custom_id`"
    } else {
        "give every item a unique id, or leave out the `id` field to number items by position"
    }
}

fn field_hint(field: &str) -> &'static str {
    match field {
        "priority" => {
            "use a whole number such as `10` (higher runs first), or leave it empty for 0"
        }
        "tokens" => {
            "use a whole number of tokens such as `1200`, or leave it empty to estimate from the request"
        }
        "id" => "use a string or a whole number, or leave out `id` to number items by position",
        "kind" => "`kind` is reserved: a string naming a request template, or left out",
        "tenant" => "`tenant` is reserved: a string naming who the item is for, or left out",
        _ => BATCH_HINT,
    }
}

/// Each id seen, with the line of its record. FxHash: SipHash's resistance to chosen
/// keys buys nothing against the user's own work list, and costs a tenth of the time
/// reading a million-line one takes.
#[derive(Debug, Default)]
struct Ids {
    seen: rustc_hash::FxHashMap<String, u64>,
    /// Duplicates are checked elsewhere (from sorted id hashes): keep nothing.
    unchecked: bool,
}

/// Most fields of earlier items a CSV reader keeps for refilling.
const MAX_SPARE: usize = 4096;

/// Streams [`Item`]s from a work list; see the module docs for the guarantees.
#[derive(Debug)]
pub struct WorklistReader {
    path: PathBuf,
    source: Source,
    /// Records read so far: the next record's `seq`.
    seq: u64,
    /// Each id seen, with the line of its record.
    ids: Ids,
    /// Set at the end of the file or after an I/O error.
    done: bool,
}

#[derive(Debug)]
enum Source {
    Csv {
        reader: csv::Reader<LineTracker<File>>,
        columns: Vec<String>,
        record: csv::ByteRecord,
        /// Fields of items read earlier, given back to be refilled ([`WorklistReader::recycle`]).
        spare: Vec<Map<String, Value>>,
    },
    Jsonl {
        reader: BufReader<File>,
        buf: Vec<u8>,
        /// Lines read so far.
        line: u64,
    },
}

impl WorklistReader {
    /// Opens the work list at `path`; its format comes from the extension. A CSV header is
    /// read and checked here.
    ///
    /// # Errors
    /// [`WorklistError::UnknownFormat`], [`WorklistError::Open`], and for a CSV header
    /// [`WorklistError::Read`], [`WorklistError::NotUtf8`] or
    /// [`WorklistError::DuplicateColumn`].
    pub fn open(path: &Path) -> Result<WorklistReader, WorklistError> {
        let format = Format::from_path(path)?;
        check_regular(path)?;
        let file = File::open(path).map_err(|source| WorklistError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let source = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(true)
                    .flexible(false)
                    .from_reader(LineTracker::new(file));
                let columns = csv_columns(path, &mut reader)?;
                Source::Csv {
                    reader,
                    columns,
                    record: csv::ByteRecord::new(),
                    spare: Vec::new(),
                }
            }
            Format::Jsonl => Source::Jsonl {
                reader: BufReader::new(file),
                buf: Vec::new(),
                line: 0,
            },
        };
        Ok(WorklistReader {
            path: path.to_path_buf(),
            source,
            seq: 0,
            ids: Ids::default(),
            done: false,
        })
    }

    /// Leaves refusing duplicate ids to the caller (the import sorts id hashes), so that
    /// reading keeps no set of every id seen: memory stays flat however long the list.
    pub fn without_id_check(mut self) -> Self {
        self.ids.unchecked = true;
        self
    }

    /// Gives back the fields of an item this reader made, to be refilled by a later CSV
    /// record instead of allocating its names and values again (a JSONL reader drops them).
    pub fn recycle(&mut self, vars: Map<String, Value>) {
        if let Source::Csv { spare, .. } = &mut self.source
            && spare.len() < MAX_SPARE
        {
            spare.push(vars);
        }
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        match self.source {
            Source::Csv { .. } => Format::Csv,
            Source::Jsonl { .. } => Format::Jsonl,
        }
    }

    /// The CSV header's column names, in order; `None` for JSONL.
    pub fn columns(&self) -> Option<&[String]> {
        match &self.source {
            Source::Csv { columns, .. } => Some(columns),
            Source::Jsonl { .. } => None,
        }
    }

    /// Reads the next CSV record: `None` at the end.
    fn next_csv(&mut self) -> Option<Result<Item, WorklistError>> {
        let Source::Csv {
            reader,
            columns,
            record,
            spare,
        } = &mut self.source
        else {
            return None;
        };
        let start = reader.position().byte();
        let result = reader.read_byte_record(record);
        let line = reader.get_mut().content_line(start);
        if matches!(result, Ok(true)) && reader.get_ref().eof {
            // A record read after the end was reached: a quote left open runs to the end
            // of the file, so only these can hold one.
            let end = reader.position().byte();
            if let Some(opened) = reader.get_ref().unclosed_quote_line(line, start, end) {
                self.done = true;
                return Some(Err(WorklistError::UnterminatedQuote {
                    path: self.path.clone(),
                    line: opened,
                }));
            }
        }
        match result {
            Ok(false) => None,
            Ok(true) => {
                let seq = self.seq;
                self.seq += 1;
                let vars = csv_vars(&self.path, line, columns, record, spare.pop());
                Some(
                    vars.and_then(|vars| {
                        item_from_object(&self.path, &mut self.ids, seq, line, vars)
                    }),
                )
            }
            Err(e) => {
                let err = csv_error(&self.path, line, e);
                if matches!(err, WorklistError::Read { .. }) {
                    self.done = true;
                } else {
                    self.seq += 1;
                }
                Some(Err(err))
            }
        }
    }

    /// Reads the next non-blank JSONL line: `None` at the end.
    fn next_jsonl(&mut self) -> Option<Result<Item, WorklistError>> {
        let Source::Jsonl { reader, buf, line } = &mut self.source else {
            return None;
        };
        loop {
            buf.clear();
            *line += 1;
            match reader.read_until(b'\n', buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.done = true;
                    return Some(Err(WorklistError::Read {
                        path: self.path.clone(),
                        line: *line,
                        source,
                    }));
                }
            }
            let Ok(text) = std::str::from_utf8(buf) else {
                self.seq += 1;
                return Some(Err(WorklistError::NotUtf8 {
                    path: self.path.clone(),
                    line: *line,
                    field: None,
                }));
            };
            // A UTF-8 byte order mark may open the file; it is not part of the JSON.
            let text = text.strip_prefix('\u{feff}').unwrap_or(text);
            if text.trim().is_empty() {
                continue;
            }
            let seq = self.seq;
            self.seq += 1;
            let line = *line;
            let object = json_object(&self.path, line, text);
            return Some(object.and_then(|object| {
                if object.contains_key("custom_id") {
                    batch_item(&self.path, &mut self.ids, seq, line, &object)
                } else {
                    item_from_object(&self.path, &mut self.ids, seq, line, object)
                }
            }));
        }
    }
}

impl Iterator for WorklistReader {
    type Item = Result<Item, WorklistError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match self.source {
            Source::Csv { .. } => self.next_csv(),
            Source::Jsonl { .. } => self.next_jsonl(),
        };
        if next.is_none() {
            self.done = true;
        }
        next
    }
}

/// Reads and checks the CSV header.
fn csv_columns(
    path: &Path,
    reader: &mut csv::Reader<LineTracker<File>>,
) -> Result<Vec<String>, WorklistError> {
    let headers = reader.byte_headers().cloned();
    let line = reader.get_mut().content_line(0);
    let headers = headers.map_err(|e| csv_error(path, line, e))?;
    let mut columns: Vec<String> = Vec::with_capacity(headers.len());
    for name in &headers {
        let name = std::str::from_utf8(name).map_err(|_| WorklistError::NotUtf8 {
            path: path.to_path_buf(),
            line,
            field: None,
        })?;
        if let Some(first) = columns.iter().position(|c| c == name) {
            return Err(WorklistError::DuplicateColumn {
                path: path.to_path_buf(),
                line,
                column: name.to_owned(),
                first: first + 1,
                second: columns.len() + 1,
            });
        }
        columns.push(name.to_owned());
    }
    Ok(columns)
}

/// Maps a csv error for the record starting on `line`: a ragged row, or an I/O error.
fn csv_error(path: &Path, line: u64, e: csv::Error) -> WorklistError {
    let path = path.to_path_buf();
    match e.into_kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => WorklistError::RaggedRow {
            path,
            line,
            found: len,
            expected: expected_len,
        },
        csv::ErrorKind::Io(source) => WorklistError::Read { path, line, source },
        // Byte records are never decoded or deserialized, so no other kind occurs.
        other => WorklistError::Read {
            path,
            line,
            source: io::Error::other(format!("{other:?}")),
        },
    }
}

/// The CSV file as the parser reads it, keeping the bytes from the current record on so
/// that a record's start line is exact. csv's own `Position` is taken before the blank
/// lines it skips and, in CRLF files, before the `\n` ending the previous line, so it can
/// be a line or more early. Memory: the current record plus the parser's read-ahead.
#[derive(Debug)]
struct LineTracker<R> {
    inner: R,
    /// Bytes read and not yet forgotten.
    window: VecDeque<u8>,
    /// Byte offset of `window[0]`.
    base: u64,
    /// 1-based line of `window[0]`.
    base_line: u64,
    /// The inner reader has reported its end.
    eof: bool,
}

impl<R> LineTracker<R> {
    fn new(inner: R) -> Self {
        LineTracker {
            inner,
            window: VecDeque::new(),
            base: 0,
            base_line: 1,
            eof: false,
        }
    }

    /// The 1-based line of the first byte at or after byte `offset` that is not a line
    /// break, i.e. where a record read from `offset` starts. Forgets the bytes before
    /// `offset`; offsets must not decrease between calls.
    fn content_line(&mut self, offset: u64) -> u64 {
        let skip = usize::try_from(offset.saturating_sub(self.base))
            .map_or(self.window.len(), |n| n.min(self.window.len()));
        // Counted on the deque's two slices: a loop the compiler vectorizes, where counting
        // through the drain went one byte at a time (a quarter of the reading thread).
        let (front, back) = self.window.as_slices();
        let in_front = skip.min(front.len());
        let forgotten = newlines(&front[..in_front]) + newlines(&back[..skip - in_front]);
        self.window.drain(..skip);
        self.base_line += forgotten as u64;
        self.base += skip as u64;
        let breaks = self
            .window
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .filter(|&&b| b == b'\n')
            .count();
        self.base_line + breaks as u64
    }
}

/// The line breaks in `bytes`, counted by blocks of 16 bytes as arrays, which the compiler
/// turns into vector compares (2.4 times faster than a filter over the slice).
fn newlines(bytes: &[u8]) -> usize {
    const BLOCK: usize = 16;
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut n = 0;
    for block in blocks.by_ref() {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        n += usize::from(block.iter().fold(0u8, |c, &b| c + u8::from(b == b'\n')));
    }
    n + blocks.remainder().iter().filter(|&&b| b == b'\n').count()
}

impl<R> LineTracker<R> {
    /// The line where a quote opened in the record from byte `start` (its first content on
    /// `line`, after [`LineTracker::content_line`]) to `end` is left open, per RFC 4180: a
    /// quote opens only at a field's start, `""` inside is one quote.
    fn unclosed_quote_line(&self, line: u64, start: u64, end: u64) -> Option<u64> {
        let skip = usize::try_from(start.saturating_sub(self.base)).ok()?;
        let take = usize::try_from(end.saturating_sub(start)).ok()?;
        let bytes: Vec<u8> = self
            .window
            .iter()
            .skip(skip)
            .skip_while(|&&b| b == b'\n' || b == b'\r')
            .take(take)
            .copied()
            .collect();
        let (mut open, mut field_start, mut lines, mut opened_on) = (false, true, 0u64, 0u64);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                lines += 1;
            }
            if open {
                if b == b'"' && bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else if b == b'"' {
                    open = false;
                }
            } else if b == b'"' && field_start {
                open = true;
                opened_on = lines;
            }
            field_start = !open && matches!(b, b',' | b'\n' | b'\r');
            i += 1;
        }
        open.then_some(line + opened_on)
    }
}

/// Refuses a path that is not a regular file (following symlinks): a directory, a device
/// or a pipe, before anything reads it.
///
/// # Errors
/// [`WorklistError::Open`] when it cannot be inspected, [`WorklistError::NotAFile`].
pub fn check_regular(path: &Path) -> Result<(), WorklistError> {
    let meta = std::fs::metadata(path).map_err(|source| WorklistError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "a device, pipe or socket"
    };
    Err(WorklistError::NotAFile {
        path: path.to_path_buf(),
        kind,
    })
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.eof |= n == 0 && !buf.is_empty();
        self.window.extend(&buf[..n]);
        Ok(n)
    }
}

/// A CSV record's fields by column name, all strings, written into `spare` (the fields of
/// an earlier record) when it holds exactly the columns: only the values' text is copied.
fn csv_vars(
    path: &Path,
    line: u64,
    columns: &[String],
    record: &csv::ByteRecord,
    spare: Option<Map<String, Value>>,
) -> Result<Map<String, Value>, WorklistError> {
    // A map with one more key holds the `id` derived for an earlier record, which this one
    // must not see.
    let mut vars = spare
        .filter(|m| m.len() == columns.len())
        .unwrap_or_default();
    for (name, bytes) in columns.iter().zip(record) {
        let Ok(value) = std::str::from_utf8(bytes) else {
            return Err(WorklistError::NotUtf8 {
                path: path.to_path_buf(),
                line,
                field: Some(name.clone()),
            });
        };
        match vars.get_mut(name) {
            Some(Value::String(text)) => {
                text.clear();
                text.push_str(value);
            }
            _ => {
                vars.insert(name.clone(), Value::String(value.to_owned()));
            }
        }
    }
    Ok(vars)
}

/// Parses one JSONL line into an object.
fn json_object(path: &Path, line: u64, text: &str) -> Result<Map<String, Value>, WorklistError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(WorklistError::NotAnObject {
            path: path.to_path_buf(),
            line,
            found: describe_type(&other),
        }),
        Err(e) => {
            // serde_json's message ends with its position, which the error shows already.
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            Err(WorklistError::InvalidJson {
                path: path.to_path_buf(),
                line,
                column: e.column(),
                reason,
            })
        }
    }
}

/// Builds a `Payload::Vars` item from a record's fields, checking the reserved ones.
fn item_from_object(
    path: &Path,
    ids: &mut Ids,
    seq: u64,
    line: u64,
    mut vars: Map<String, Value>,
) -> Result<Item, WorklistError> {
    let fields = Fields { path, line };
    let id = match vars.get("id") {
        None => {
            let id = (seq + 1).to_string();
            vars.insert("id".to_owned(), Value::String(id.clone()));
            id
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => return Err(fields.invalid("id", "a string", Some(other))),
    };
    fields.claim_id(ids, "id", &id)?;
    for field in ["kind", "tenant"] {
        match vars.get(field) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(other) => return Err(fields.invalid(field, "a string", Some(other))),
        }
    }
    Ok(Item {
        seq,
        line,
        id,
        priority: fields.priority(&vars)?,
        tokens: fields.tokens(&vars)?,
        payload: Payload::Vars(vars),
    })
}

/// Builds a `Payload::Batch` item from an OpenAI Batch line.
fn batch_item(
    path: &Path,
    ids: &mut Ids,
    seq: u64,
    line: u64,
    object: &Map<String, Value>,
) -> Result<Item, WorklistError> {
    let fields = Fields { path, line };
    let string = |field: &'static str, expected: &'static str| match object.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        other => Err(fields.invalid(field, expected, other)),
    };
    let id = string("custom_id", "a string")?;
    fields.claim_id(ids, "custom_id", &id)?;
    let method = string("method", "a string such as `POST`")?;
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.to_ascii_uppercase().as_str()) {
        let found = Value::String(method);
        return Err(fields.invalid(
            "method",
            "one of GET, POST, PUT, PATCH, DELETE",
            Some(&found),
        ));
    }
    let url = string("url", "a path starting with `/`")?;
    if !url.starts_with('/') || url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        let found = Value::String(url);
        return Err(fields.invalid("url", "a path starting with `/`", Some(&found)));
    }
    let body = match object.get("body") {
        Some(body @ Value::Object(_)) => body.clone(),
        // A body is never quoted into an error, only its type.
        other => {
            return Err(WorklistError::InvalidField {
                path: path.to_path_buf(),
                line,
                field: "body",
                expected: "a JSON object",
                found: other.map_or("nothing", describe_type).to_owned(),
            });
        }
    };
    Ok(Item {
        seq,
        line,
        id,
        priority: fields.priority(object)?,
        tokens: fields.tokens(object)?,
        payload: Payload::Batch { method, url, body },
    })
}

/// Checks on one record's fields, with its position for errors.
struct Fields<'a> {
    path: &'a Path,
    line: u64,
}

impl Fields<'_> {
    fn invalid(
        &self,
        field: &'static str,
        expected: &'static str,
        found: Option<&Value>,
    ) -> WorklistError {
        WorklistError::InvalidField {
            path: self.path.to_path_buf(),
            line: self.line,
            field,
            expected,
            found: found.map_or_else(|| "nothing".to_owned(), describe),
        }
    }

    /// Refuses an empty or already used id, and records it as used.
    fn claim_id(&self, ids: &mut Ids, field: &'static str, id: &str) -> Result<(), WorklistError> {
        if id.trim().is_empty() {
            return Err(WorklistError::EmptyId {
                path: self.path.to_path_buf(),
                line: self.line,
                field,
            });
        }
        if ids.unchecked {
            return Ok(());
        }
        match ids.seen.entry(id.to_owned()) {
            Entry::Occupied(first) => Err(WorklistError::DuplicateId {
                path: self.path.to_path_buf(),
                line: self.line,
                field,
                id: id.to_owned(),
                first_line: *first.get(),
            }),
            Entry::Vacant(slot) => {
                slot.insert(self.line);
                Ok(())
            }
        }
    }

    /// An optional integer field: a JSON number or a string holding one (blanks trimmed).
    /// Absent, `null` or empty is `None`.
    fn integer<T: FromStr>(
        &self,
        fields: &Map<String, Value>,
        field: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, WorklistError> {
        let Some(value) = fields.get(field) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Null => return Ok(None),
            Value::String(s) if s.trim().is_empty() => return Ok(None),
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.to_string().parse().ok(),
            _ => None,
        };
        match parsed {
            Some(n) => Ok(Some(n)),
            None => Err(self.invalid(field, expected, Some(value))),
        }
    }

    /// `priority`: a whole number, 0 when not given.
    fn priority(&self, fields: &Map<String, Value>) -> Result<i64, WorklistError> {
        Ok(self
            .integer(fields, "priority", "a whole number")?
            .unwrap_or(0))
    }

    /// `tokens`: a non-negative whole number, optional.
    fn tokens(&self, fields: &Map<String, Value>) -> Result<Option<u64>, WorklistError> {
        self.integer(fields, "tokens", "a non-negative whole number")
    }
}

/// A short description of a found value for an error: scalars in backticks (long strings
/// cut), arrays and objects by type only, so no large value ends up in a message.
fn describe(value: &Value) -> String {
    const MAX_CHARS: usize = 40;
    match value {
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            format!("`{}...`", s.chars().take(MAX_CHARS).collect::<String>())
        }
        Value::String(s) => format!("`{s}`"),
        Value::Array(_) | Value::Object(_) => describe_type(value).to_owned(),
        scalar => format!("`{scalar}`"),
    }
}

/// A JSON value's type, with its article.
fn describe_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// Line breaks are counted in whole blocks and in the rest alike.
        #[test]
        fn newlines_counts_every_line_break(text in "[a\n\r]{0,70}") {
            let naive = text.bytes().filter(|&b| b == b'\n').count();
            proptest::prop_assert_eq!(newlines(text.as_bytes()), naive);
        }

        /// The import's payload text is what serde_json writes: text with escapes anywhere,
        /// JSONL's numbers, booleans, nulls and nested values.
        #[test]
        fn payload_json_is_byte_for_byte_serde_jsons(
            fields in proptest::collection::vec(
                ("[a-z_\"\\\n\u{e9}]{0,12}", "[a-z \"\\\n\u{1}\u{1f600}]{0,40}", 0..5u8),
                0..6,
            )
        ) {
            let vars: Map<String, Value> = fields
                .into_iter()
                .map(|(name, text, kind)| {
                    let value = match kind {
                        0 => json!(text.len()),
                        1 => json!(null),
                        2 => json!({"nested": text, "list": [1.5, true]}),
                        _ => Value::String(text),
                    };
                    (name, value)
                })
                .collect();
            for payload in [
                Payload::Vars(vars.clone()),
                Payload::Batch { method: "POST".into(), url: "/v1/x".into(), body: Value::Object(vars) },
            ] {
                let mut out = String::new();
                payload.write_json(&mut out);
                proptest::prop_assert_eq!(out, serde_json::to_string(&payload).unwrap());
            }
        }
    }

    /// Writes a work list named `name` into a fresh temp dir.
    fn list(name: &str, content: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn read(name: &str, content: impl AsRef<[u8]>) -> Vec<Result<Item, WorklistError>> {
        let (_dir, path) = list(name, content);
        WorklistReader::open(&path).unwrap().collect()
    }

    fn items(name: &str, content: impl AsRef<[u8]>) -> Vec<Item> {
        read(name, content)
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn recycled_fields_read_as_fresh_ones() {
        for content in [
            &b"id,prompt,tenant\na,hello,t1\nb,\"with, comma\",\nc,x\xffy,t3\nd,last,t4\n"[..],
            &b"prompt,kind\nfirst,k\nsecond,\nthird,k\n"[..],
        ] {
            let (_dir, path) = list("l.csv", content);
            let fresh: Vec<_> = WorklistReader::open(&path).unwrap().collect();
            let mut reader = WorklistReader::open(&path).unwrap();
            let mut recycled = Vec::new();
            while let Some(item) = reader.next() {
                if let Ok(Item {
                    payload: Payload::Vars(vars),
                    ..
                }) = &item
                {
                    reader.recycle(vars.clone());
                }
                recycled.push(item);
            }
            assert_eq!(format!("{recycled:?}"), format!("{fresh:?}"));
        }
    }

    /// The work list's only error, and its message from the file name on (no temp dir).
    fn only_error(name: &str, content: impl AsRef<[u8]>) -> (WorklistError, String) {
        let mut errors: Vec<_> = read(name, content)
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let err = errors.remove(0);
        let text = err.to_string();
        let text = text[text.find(name).unwrap()..].to_owned();
        (err, text)
    }

    fn vars(item: &Item) -> Value {
        match &item.payload {
            Payload::Vars(vars) => Value::Object(vars.clone()),
            other => panic!("expected vars, got {other:?}"),
        }
    }

    fn lines(items: &[Item]) -> Vec<(u64, u64, &str)> {
        items
            .iter()
            .map(|i| (i.seq, i.line, i.id.as_str()))
            .collect()
    }

    #[test]
    fn repeats_are_the_hashes_seen_twice_each_once() {
        assert_eq!(repeats([1, 2, 2, 2, 5, 7, 7].into_iter()), [2, 7]);
        assert!(repeats([1, 2, 3].into_iter()).is_empty());
        assert_eq!(id_hash("a"), id_hash("a"));
        assert_ne!(id_hash("a"), id_hash("b"));
    }

    #[test]
    fn csv_quoted_newlines_crlf_and_blank_lines_keep_exact_line_numbers() {
        let csv = "id,prompt\na1,\"say \"\"hi\"\",\nthen go\"\na2,plain\n\na3,\"x,y\"\n";
        let got = items("w.csv", csv);
        assert_eq!(lines(&got), [(0, 2, "a1"), (1, 4, "a2"), (2, 6, "a3")]);
        assert_eq!(vars(&got[0])["prompt"], "say \"hi\",\nthen go");
        // csv's own positions are a line early here; the tracker corrects them.
        let crlf = "\r\n\nid,p\r\na,1\r\n\r\nb,\"x\r\ny\"\r\n\r\n\r\nc,3";
        assert_eq!(
            lines(&items("w.csv", crlf)),
            [(0, 4, "a"), (1, 6, "b"), (2, 10, "c")]
        );
    }

    #[test]
    fn csv_values_are_strings_and_reserved_fields_stay_in_vars() {
        let csv = "\u{feff}id,priority,tokens,kind,tenant,n\nx,5,100,bio,acme,42\n";
        let (_dir, path) = list("w.csv", csv);
        let reader = WorklistReader::open(&path).unwrap();
        assert_eq!(reader.format(), Format::Csv);
        assert_eq!(
            reader.columns().unwrap(),
            ["id", "priority", "tokens", "kind", "tenant", "n"]
        );
        let got: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(
            vars(&got[0]),
            json!({"id": "x", "priority": "5", "tokens": "100", "kind": "bio", "tenant": "acme", "n": "42"})
        );
    }

    #[test]
    fn missing_ids_are_derived_from_the_record_number() {
        let got = items("w.csv", "name\nann\nbob\n");
        assert_eq!(lines(&got), [(0, 2, "1"), (1, 3, "2")]);
        assert_eq!(vars(&got[1])["id"], "2");
    }

    #[test]
    fn priority_and_tokens_parse_with_defaults() {
        let got = items("w.csv", "id,priority,tokens\na,10,1200\nb,,\nc, -3 , 7 \n");
        let parsed: Vec<_> = got.iter().map(|i| (i.priority, i.tokens)).collect();
        assert_eq!(parsed, [(10, Some(1200)), (0, None), (-3, Some(7))]);
    }

    #[test]
    fn jsonl_vars_keep_json_types_and_blank_lines_are_skipped() {
        let jsonl = "\u{feff}{\"id\": \"a\", \"n\": 3, \"tags\": [\"x\"]}\n\n  \r\n\
                     {\"id\": 7, \"priority\": 2, \"tokens\": \"9\"}\r\n{\"q\": null}";
        let got = items("w.jsonl", jsonl);
        assert_eq!(lines(&got), [(0, 1, "a"), (1, 4, "7"), (2, 5, "3")]);
        assert_eq!(vars(&got[0]), json!({"id": "a", "n": 3, "tags": ["x"]}));
        assert_eq!((got[1].priority, got[1].tokens), (2, Some(9)));
    }

    #[test]
    fn jsonl_batch_lines_become_batch_payloads() {
        let line = r#"{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}, "priority": 4, "tokens": 50}"#;
        let got = items("w.ndjson", format!("{line}\n{{\"prompt\": \"p\"}}\n"));
        assert_eq!(
            (got[0].id.as_str(), got[0].priority, got[0].tokens),
            ("r1", 4, Some(50))
        );
        let batch = Payload::Batch {
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: json!({"model": "m"}),
        };
        assert_eq!(got[0].payload, batch);
        assert_eq!(got[1].id, "2");
        // The store keeps payloads as JSON text.
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(serde_json::from_str::<Payload>(&text).unwrap(), batch);
    }

    #[test]
    fn iteration_continues_after_bad_records() {
        let results = read("w.csv", "id,priority\na,1\nb,high\nc,2,extra\nd,3\n");
        assert_eq!(results.len(), 4, "{results:?}");
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(WorklistError::InvalidField { line: 3, .. })
        ));
        assert!(matches!(
            results[2],
            Err(WorklistError::RaggedRow { line: 4, .. })
        ));
        let last = results[3].as_ref().unwrap();
        assert_eq!((last.id.as_str(), last.seq, last.line), ("d", 3, 5));
    }

    #[test]
    fn a_directory_is_refused_at_open_not_at_the_first_read() {
        // A directory opens like a file on Unix and used to fail on the first read (exit 1);
        // issue 12 refuses it before reading (exit 2).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::create_dir(&path).unwrap();
        let err = WorklistReader::open(&path).err().unwrap();
        assert!(matches!(err, WorklistError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn issue_12_an_unterminated_quote_is_refused_at_the_line_where_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv");
        std::fs::write(&path, "id,prompt\na,ok\nb,\"stray\nc,hi\nd,there\n").unwrap();
        let items: Vec<_> = WorklistReader::open(&path).unwrap().collect();
        assert!(items[0].is_ok());
        match items.last() {
            Some(Err(WorklistError::UnterminatedQuote { line, .. })) => assert_eq!(*line, 3),
            other => panic!("{other:?}"),
        }
        // Quotes closed, doubled, or inside an unquoted value are fine.
        std::fs::write(
            &path,
            "id,prompt\na,\"x \"\"y\"\"\nz\"\nb,5\" screen\nc,\"q\"",
        )
        .unwrap();
        let items: Vec<_> = WorklistReader::open(&path).unwrap().collect();
        assert!(items.iter().all(Result::is_ok), "{items:?}");
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn issue_12_only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("d.csv");
        std::fs::create_dir(&sub).unwrap();
        let err = WorklistReader::open(&sub).err().unwrap();
        assert!(matches!(err, WorklistError::NotAFile { .. }), "{err}");
        let link = dir.path().join("zero.csv");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = WorklistReader::open(&link).err().unwrap();
        assert!(matches!(err, WorklistError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn open_refuses_missing_files_unknown_extensions_and_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        let err = WorklistReader::open(&dir.path().join("nope.csv")).unwrap_err();
        assert!(matches!(err, WorklistError::Open { .. }));
        assert!(err.to_string().ends_with(
            "nope.csv: cannot open the work list\n  hint: check the path; a relative path starts from the current folder"
        ));
        let err = WorklistReader::open(Path::new("jobs/list.txt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "jobs/list.txt: unknown work-list extension `.txt`\n  hint: name the file `.csv` (a header row, then one item per row) or `.jsonl` / `.ndjson` (one JSON object per line)"
        );
        let err = WorklistReader::open(Path::new("jobs/list")).unwrap_err();
        assert!(matches!(
            err,
            WorklistError::UnknownFormat {
                extension: None,
                ..
            }
        ));
        for (content, problem) in [
            (
                &b"id,n\xe9\na,b\n"[..],
                "w.csv:1: the line is not valid UTF-8",
            ),
            (
                b"id,name,name\na,b,c\n",
                "w.csv:1: column `name` appears twice in the header (columns 2 and 3)",
            ),
        ] {
            let (_dir, path) = list("w.csv", content);
            let text = WorklistReader::open(&path).unwrap_err().to_string();
            assert!(text.contains(&format!("{problem}\n  hint: ")), "{text}");
        }
    }

    /// Each bad record: the first line of its message (file:line, field, value), and a hint.
    #[test]
    fn bad_records_name_line_field_and_value() {
        #[rustfmt::skip]
        let cases: [(&[u8], &str); 19] = [
            (b"id,n\na,\"multi\nline\"\nb\n", "w.csv:4: row has 1 fields, the header has 2"),
            (b"id,name\na,caf\xe9\n", "w.csv:2: field `name` is not valid UTF-8"),
            (b"{}\n{\"a\": \"\xff\"}\n", "w.jsonl:2: the line is not valid UTF-8"),
            (b"{\"a\": tru}\n", "w.jsonl:1:10: the line is not valid JSON: expected ident"),
            (b"[1, 2]\n", "w.jsonl:1: the line is an array, not a JSON object"),
            (b"id\na\nb\na\n", "w.csv:4: id `a` is already used on line 2"),
            (b"{}\n{\"id\": \"1\"}\n", "w.jsonl:2: id `1` is already used on line 1"),
            (b"id,n\n ,2\n", "w.csv:2: `id` is empty"),
            (b"{\"id\": true}", "w.jsonl:1: `id` must be a string, found `true`"),
            (b"id,priority\na,high\n", "w.csv:2: `priority` must be a whole number, found `high`"),
            (b"{\"priority\": 1.5}", "w.jsonl:1: `priority` must be a whole number, found `1.5`"),
            (b"id,tokens\na,-5\n", "w.csv:2: `tokens` must be a non-negative whole number, found `-5`"),
            (b"{\"tokens\": [1]}", "w.jsonl:1: `tokens` must be a non-negative whole number, found an array"),
            (b"{\"tenant\": 5}", "w.jsonl:1: `tenant` must be a string, found `5`"),
            (br#"{"custom_id": ""}"#, "w.jsonl:1: `custom_id` is empty"),
            (br#"{"custom_id": "r", "method": 2}"#, "w.jsonl:1: `method` must be a string such as `POST`, found `2`"),
            (br#"{"custom_id": "r", "method": "POST"}"#, "w.jsonl:1: `url` must be a path starting with `/`, found nothing"),
            (br#"{"custom_id": "r", "method": "GET", "url": "v1/x"}"#, "w.jsonl:1: `url` must be a path starting with `/`, found `v1/x`"),
            (br#"{"custom_id": "r", "method": "POST", "url": "/x", "body": "secret"}"#, "w.jsonl:1: `body` must be a JSON object, found a string"),
        ];
        for (content, problem) in cases {
            let name = &problem[..problem.find(':').unwrap()];
            let (_, text) = only_error(name, content);
            let (first, hint) = text.split_once('\n').unwrap();
            assert_eq!(first, problem);
            assert!(
                hint.starts_with("  hint: ") && !hint.ends_with('.'),
                "{text}"
            );
        }
    }

    #[test]
    fn messages_read_in_full() {
        let (err, text) = only_error("w.csv", "id,priority\na,high\n");
        assert!(matches!(
            err,
            WorklistError::InvalidField {
                line: 2,
                field: "priority",
                ..
            }
        ));
        assert_eq!(
            text,
            "w.csv:2: `priority` must be a whole number, found `high`\n  hint: use a whole number such as `10` (higher runs first), or leave it empty for 0"
        );
        let (_, text) = only_error("w.jsonl", r#"{"custom_id": "r", "method": 1}"#);
        assert_eq!(
            text,
            "w.jsonl:1: `method` must be a string such as `POST`, found `1`\n  hint: a line with `custom_id` is an OpenAI Batch request: `{\"custom_id\": \"r1\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {...}}`"
        );
    }
}
