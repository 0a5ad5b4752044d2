//! What every store-using command shares: load the config, open the store,
//! run, close, and turn errors into messages and exit codes.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use nodepool_core::config::Config;
use nodepool_core::store::NodeStore;

use crate::daemon::{self, DaemonError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CmdError {
    /// What was named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<nodepool_core::Error> for CmdError {
    fn from(e: nodepool_core::Error) -> Self {
        match e {
            nodepool_core::Error::NodeNotFound { .. }
            | nodepool_core::Error::RequestNotFound { .. }
            | nodepool_core::Error::NotFound { .. } => CmdError::NotFound(e.to_string()),
            other => CmdError::Failed(other.to_string()),
        }
    }
}

impl From<DaemonError> for CmdError {
    fn from(e: DaemonError) -> Self {
        CmdError::Failed(e.to_string())
    }
}

/// The global options a command runs with.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// `-c`.
    pub(crate) config: PathBuf,
    /// `-s`.
    pub(crate) secure: Option<PathBuf>,
    /// `--state-dir`.
    pub(crate) state_dir: PathBuf,
}

impl Session {
    /// Load the configuration.
    pub(crate) fn config(&self) -> Result<Config, CmdError> {
        daemon::load_config(&self.config, self.secure.as_deref(), &daemon::registry())
            .map_err(CmdError::from)
    }
}

/// Open the store the config names, run `f`, close the store.
pub(crate) fn with_store<F, Fut>(session: &Session, f: F) -> ExitCode
where
    F: FnOnce(Arc<dyn NodeStore>, Session) -> Fut,
    Fut: Future<Output = Result<(), CmdError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        let config = session.config()?;
        let store = daemon::open_store(&config, &session.state_dir).await?;
        let result = f(Arc::clone(&store), session.clone()).await;
        let _ = store.close().await;
        result
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
