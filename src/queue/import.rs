//! [`Inserter`]: the import's writing half, on a thread of its own.
//!
//! The work list is read on one thread and each item validated (its request rendered and
//! checked against the limits) on another; validated items reach this one in batches and go
//! into the import's own file ([`Importing`]) in large transactions through a prepared
//! statement. Nothing is runnable until [`Importing::install`] binds that file to the list
//! and puts it in the db's place, after every item was checked: a bad row anywhere leaves no
//! queue behind, and a kill during the import makes the next run start it over.
//!
//! Ids are checked for repeats without an index on them (inserting ten million ids into a
//! b-tree in random order cost the writing thread more than the rows): each id's hash goes
//! to a [`Spill`], sorted on disk beyond a chunk, and only the ids of hashes seen twice are
//! compared, in one pass over the items once all are in.

use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::scheduler::Lane;
use crate::spill::{self, Spill};
use crate::store::{DuplicateId, ImportRow, Importing, Store, StoreError};
use crate::worklist::{Item, id_hash, repeats};

/// Items per transaction.
const BATCH: usize = 8_192;

/// Batches waiting for the writing thread (bounds the import's memory).
const QUEUED_BATCHES: usize = 2;

/// Batches of rows there ever are: the one being filled, those queued, the one being
/// written. The import's memory stays that of these rows however long the list.
const BATCHES: usize = QUEUED_BATCHES + 2;

/// What an import wrote.
pub struct Imported {
    /// The import's file, back from the writing thread (not yet runnable:
    /// [`Importing::install`] makes it so).
    pub importing: Importing,
    /// Items written.
    pub count: u64,
    /// The first id found twice, if any.
    pub duplicate: Option<DuplicateId>,
}

/// Writes validated items into the store on a thread of its own.
pub struct Inserter {
    tx: Option<SyncSender<Vec<ImportRow>>>,
    /// Written batches, back from the writing thread: their rows are refilled, so that
    /// items cost no allocation here and no free there.
    spare: Receiver<Vec<ImportRow>>,
    thread: Option<JoinHandle<Result<(Importing, u64), StoreError>>>,
    /// The batch being filled: its first `filled` rows are this batch's, the rest are
    /// rows of an earlier one, to be refilled.
    batch: Vec<ImportRow>,
    filled: usize,
    /// Batches made so far, up to [`BATCHES`].
    made: usize,
    /// A problem was found: nothing more is written.
    abandoned: bool,
    /// The hash of every id queued.
    ids: Spill<u64>,
}

impl Inserter {
    /// Starts an import into `store` (into a file of its own, [`Store::begin_import`]) and
    /// the thread writing it.
    ///
    /// # Errors
    /// When the import's file cannot be created, or the thread cannot start.
    pub fn start(store: &Store) -> Result<Inserter, StoreError> {
        let mut importing = store.begin_import()?;
        let path = importing.path().to_path_buf();
        let (tx, rx) = sync_channel::<Vec<ImportRow>>(QUEUED_BATCHES);
        let (spare_tx, spare) = channel::<Vec<ImportRow>>();
        let thread = std::thread::Builder::new()
            .name("ratebound-import".into())
            .spawn(move || {
                let mut count = 0u64;
                for batch in rx {
                    importing.insert_items(&batch)?;
                    count += batch.len() as u64;
                    // Refilled by the validating thread (or dropped, when it is done).
                    let _ = spare_tx.send(batch);
                }
                Ok((importing, count))
            })
            .map_err(|e| StoreError::WriterGone {
                path,
                message: e.to_string(),
            })?;
        Ok(Inserter {
            tx: Some(tx),
            spare,
            thread: Some(thread),
            batch: Vec::with_capacity(BATCH),
            filled: 0,
            made: 1,
            abandoned: false,
            ids: Spill::new(spill::CHUNK),
        })
    }

    /// Queues one validated item in `lane`; a full batch goes to the writing thread.
    pub fn push(&mut self, item: &Item, lane: Lane) {
        if self.abandoned {
            return;
        }
        self.ids.push(id_hash(&item.id));
        match self.batch.get_mut(self.filled) {
            Some(row) => row.refill(item, lane),
            None => self.batch.push(ImportRow::of(item, lane)),
        }
        self.filled += 1;
        if self.filled >= BATCH {
            self.send();
        }
    }

    /// A problem was found in the work list: the rest is checked but not written.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.batch = Vec::new();
        self.filled = 0;
    }

    fn send(&mut self) {
        self.batch.truncate(self.filled);
        self.filled = 0;
        let spare = if self.made < BATCHES {
            self.spare.try_recv().ok()
        } else {
            // Every batch is made: wait for the writing thread to give one back (none
            // comes once it has stopped).
            self.spare.recv().ok()
        };
        let next = spare.unwrap_or_else(|| {
            self.made += 1;
            Vec::with_capacity(BATCH)
        });
        let batch = std::mem::replace(&mut self.batch, next);
        if let Some(tx) = &self.tx
            && tx.send(batch).is_err()
        {
            // The thread stopped on an error, which `finish` returns.
            self.abandoned = true;
        }
    }

    /// Writes what is left, waits for the thread, then looks for a repeated id.
    ///
    /// # Errors
    /// The first error of the writing thread, or of the id hashes' temporary file.
    pub fn finish(mut self) -> Result<Imported, StoreError> {
        if !self.abandoned && self.filled > 0 {
            self.send();
        }
        drop(self.tx.take());
        let (importing, count) = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => {
                return Err(StoreError::WriterGone {
                    path: std::path::PathBuf::new(),
                    message: "the import thread panicked".into(),
                });
            }
        };
        let mut duplicate = None;
        if !self.abandoned {
            let spill_err = |source| StoreError::Spill {
                path: importing.path().to_path_buf(),
                source,
            };
            let ids = self.ids.finish().map_err(spill_err)?;
            let repeated = repeats(ids.iter());
            if let Some(e) = ids.read_error() {
                return Err(spill_err(e));
            }
            duplicate = importing.first_repeated_id(&repeated)?;
        }
        Ok(Imported {
            importing,
            count,
            duplicate,
        })
    }
}
