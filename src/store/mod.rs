//! Durable state in an embedded database file: daily windows of clients and accounts, learned
//! upstream limits, disabled keys, and the usage ledger.
//!
//! The store is [redb](https://www.redb.org): pure Rust (nothing to install or link), ACID with
//! crash-safe commits, a stable file format, and actively maintained. Writes never sit on the
//! request path: requests only push ledger records into a buffer, and a background task writes the
//! state that changed, plus the buffered records, in one transaction per flush interval. After a
//! graceful shutdown nothing is lost; after `kill -9` at most the last interval.

mod ledger;
mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use ledger::{LedgerRecord, UsageRow, usage_report};
pub use snapshot::{Charges, DisabledKey, State};

/// Key → JSON of one piece of state (a window, a learned limit, a disabled key).
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// (unix ms << 20 | sequence) → JSON of one request's record.
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened (another keyrelay may hold it).
    #[error(
        "cannot open state file {path}: {source} (is another keyrelay using it? set [store] path or KEYRELAY_STATE_PATH)"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("state file error: {0}")]
    Io(#[from] redb::Error),
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Io(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        Self::Io(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        Self::Io(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        Self::Io(e.into())
    }
}

/// The open state file and what is waiting to be written to it.
pub struct Store {
    db: Database,
    path: PathBuf,
    pending: Mutex<Pending>,
    /// Held from capture to commit, so flushes land in the order their snapshots were taken.
    flushing: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    records: Vec<LedgerRecord>,
    /// What the last flush wrote per state key (to write only what changed).
    written: HashMap<String, Vec<u8>>,
    sequence: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A window's export (ages) as unix-time charges.
pub fn to_unix(entries: &[(Duration, u64)], unix_now: u64) -> Charges {
    entries
        .iter()
        .map(|(age, amount)| (unix_now.saturating_sub(age.as_millis() as u64), *amount))
        .collect()
}

/// Unix-time charges as ages, for `SlidingWindow::import`.
pub fn to_ages(charges: &Charges, unix_now: u64) -> Vec<(Duration, u64)> {
    charges
        .iter()
        .map(|(at, amount)| (Duration::from_millis(unix_now.saturating_sub(*at)), *amount))
        .collect()
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (or creates) the state file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let db = Database::create(path)
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        Ok(Self {
            db,
            path: path.to_owned(),
            pending: Mutex::new(Pending::default()),
            flushing: Mutex::new(()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything saved, as written by the last flush.
    pub fn load(&self) -> Result<State, StoreError> {
        let txn = self.db.begin_read()?;
        let mut entries = BTreeMap::new();
        match txn.open_table(STATE) {
            Ok(table) => {
                for entry in table.iter()? {
                    let (key, value) = entry?;
                    entries.insert(key.value().to_owned(), value.value().to_vec());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.pending().written = entries.clone().into_iter().collect();
        Ok(State::from_entries(entries))
    }

    /// Queues a ledger record for the next flush.
    pub fn record(&self, record: LedgerRecord) {
        self.pending().records.push(record);
    }

    /// Captures state with `capture` and writes what changed, plus the queued records, dropping
    /// records older than `retention`, in one transaction. Flushes never overlap.
    pub fn flush_with(
        &self,
        capture: impl FnOnce() -> State,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        self.flush(&capture(), retention)
    }

    /// Writes the changed parts of `state` and the queued records, and drops records older than
    /// `retention`, in one transaction.
    pub fn flush(&self, state: &State, retention: Duration) -> Result<(), StoreError> {
        let entries = state.to_entries();
        let (records, changed, removed, base) = {
            let mut pending = self.pending();
            let records = std::mem::take(&mut pending.records);
            let changed: Vec<(String, Vec<u8>)> = entries
                .iter()
                .filter(|(k, v)| pending.written.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Only entries this version writes are removed; others (a newer version's) stay.
            let removed: Vec<String> = pending
                .written
                .keys()
                .filter(|k| !entries.contains_key(*k) && State::owns_key(k))
                .cloned()
                .collect();
            let base = pending.sequence;
            pending.sequence += records.len() as u64;
            (records, changed, removed, base)
        };
        let written = self.write(&changed, &removed, &records, base, retention);
        if written.is_err() {
            // Nothing was committed: the records go out with the next flush.
            let mut pending = self.pending();
            let newer = std::mem::take(&mut pending.records);
            pending.records = records;
            pending.records.extend(newer);
            return written;
        }
        let mut pending = self.pending();
        for (key, value) in changed {
            pending.written.insert(key, value);
        }
        for key in removed {
            pending.written.remove(&key);
        }
        Ok(())
    }

    fn write(
        &self,
        changed: &[(String, Vec<u8>)],
        removed: &[String],
        records: &[LedgerRecord],
        base: u64,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(STATE)?;
            for (key, value) in changed {
                table.insert(key.as_str(), value.as_slice())?;
            }
            for key in removed {
                table.remove(key.as_str())?;
            }
            let mut ledger = txn.open_table(LEDGER)?;
            for (offset, record) in records.iter().enumerate() {
                let key = (record.time_ms << 20) | ((base + offset as u64) & 0xF_FFFF);
                ledger.insert(key, serde_json::to_vec(record).unwrap_or_default().as_slice())?;
            }
            let cutoff = unix_ms().saturating_sub(retention.as_millis() as u64) << 20;
            ledger.retain_in(..cutoff, |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every ledger record since `since_ms`.
    pub fn records(&self, since_ms: u64) -> Result<Vec<LedgerRecord>, StoreError> {
        read_records(&self.db, since_ms)
    }
}

/// Ledger records of a state file no keyrelay has open (for `keyrelay usage`).
pub fn read_file_records(path: &Path, since_ms: u64) -> Result<Vec<LedgerRecord>, StoreError> {
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => read_records(&db, since_ms),
        // A file left by a crash needs a repair, which only a writable open performs.
        Err(redb::DatabaseError::RepairAborted) => {
            let db = Database::open(path)
                .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
            read_records(&db, since_ms)
        }
        Err(source) => Err(StoreError::Open { path: path.to_owned(), source }),
    }
}

fn read_records(
    db: &impl ReadableDatabase,
    since_ms: u64,
) -> Result<Vec<LedgerRecord>, StoreError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(LEDGER) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.range((since_ms << 20)..)? {
        let (_, value) = entry?;
        if let Ok(record) = serde_json::from_slice(value.value()) {
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
