//! highwater copies records from a help-desk API (first: Cerb) into a Parquet lake and a DuckDB
//! warehouse, current to the minute, losing nothing.
//!
//! ```text
//! config ─validate (pure)─▶ Pipeline { source, lake, warehouse }
//! warehouse.stream_state ─▶ cursor (updated, id); window end H = server Date − lag
//! source.pages(cursor, H) ─▶ validated pages (sorted, all > cursor, all ≤ H)
//! convert ─▶ Arrow RecordBatch (schema widened safely; system columns)
//! per checkpoint: lake.write_parquet (create-if-absent)
//!                 warehouse.commit_checkpoint  ← ONE transaction: rows + file + cursor
//!                 lake manifest (derived from the warehouse)
//! window read to the end ─▶ cursor = (H, +inf)
//! ```
//!
//! Invariants:
//! - the cursor never moves without its rows, and rows never land without their cursor;
//! - the cursor never passes a second that can still receive writes (`H = now − lag`);
//! - a page that breaks the keyset contract fails the run; nothing from it is committed;
//! - Parquet objects are never overwritten; a crash leaves at most an unreferenced object.

pub mod cli;
pub mod config;
pub mod convert;
pub mod gc;
pub mod lake;
pub mod model;
pub mod reconcile;
pub mod sim;
pub mod source;
pub mod sync;
pub mod util;
pub mod warehouse;
