//! One integration-test binary; each module is one area.

mod cli;
mod crash;
mod reconcile;
mod sim;
mod sync;
mod util;
