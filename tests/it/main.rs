//! One integration-test binary; each module is one area.

mod badinput;
mod cli;
mod crash;
mod lake_s3;
mod reconcile;
mod reliability;
mod s3;
mod sim;
mod sync;
mod util;
