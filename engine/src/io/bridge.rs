//! Bridge mode (L2): being written.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::config::Config;
use super::datapath::Shared;
use super::RunError;

/// Starts the workers of this mode.
pub fn start(
    _shared: Arc<Shared>,
    _cfg: &Config,
    _workers: usize,
    _stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>, RunError> {
    Err(RunError::Unsupported("mode bridge is not supported by this version".into()))
}
