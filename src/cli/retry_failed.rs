//! `ratebound retry-failed`: put permanently failed items back in the queue.

use super::control::DbArgs;
use super::{EXIT_OK, out};
use crate::store::Store;
use crate::store::claim::Claim;

/// Marks every failed item pending again and says how to send them.
pub(super) fn retry_failed(args: &DbArgs) -> anyhow::Result<u8> {
    let store = Store::open_existing(&args.db)?;
    // Not under a live run: it loaded its queue at start and would not see them.
    let _claim = Claim::take(&args.db)?;
    let n = store.requeue_failed()?;
    out(&format!(
        "{n} failed items are pending again; `ratebound resume --db {}` sends them\n",
        args.db.display()
    ))?;
    Ok(EXIT_OK)
}
