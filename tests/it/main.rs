//! One integration-test binary; each module is one area.

mod badinput;
mod cli;
mod reconcile;
mod sim;
mod sync;
mod util;
