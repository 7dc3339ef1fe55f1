//! One integration-test binary; each module is one area.

mod cli;
mod reconcile;
mod reliability;
mod sim;
mod sync;
mod util;
