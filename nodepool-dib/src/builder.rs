//! [`DibImageBuilder`]: runs diskimage-builder for one build.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nodepool_core::image_builder::{BuildSpec, BuiltFile, ImageBuilder};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::command::{dib_command, output_path};
use crate::DibError;

/// How [`DibImageBuilder`] runs builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DibSettings {
    /// Replaces `%p` in a diskimage's `dib-cmd` (upstream: its package
    /// directory, where `fake-image-create` lives). `None` leaves `%p`.
    pub script_dir: Option<PathBuf>,
    /// How long a stopped build may take to exit after SIGTERM before its
    /// process group gets SIGKILL.
    pub kill_grace: Duration,
}

impl Default for DibSettings {
    fn default() -> Self {
        Self {
            script_dir: None,
            kill_grace: Duration::from_secs(30),
        }
    }
}

/// An [`ImageBuilder`] that runs `disk-image-create` (or the diskimage's
/// `dib-cmd`) with upstream's command line (see [`crate::command`]).
///
/// - Standard output and error go, line by line, to the build log
///   (`BuildSpec::log_path`, truncated first) and to `tracing` at debug;
///   the log ends with `Exit code: N` as upstream's.
/// - The command runs in its own process group; on cancellation the group
///   gets SIGTERM, then SIGKILL after [`DibSettings::kill_grace`].
/// - On success every asked format must exist at `<output base>.<format>`;
///   sizes are the allocated bytes (`st_blocks * 512`, what upstream
///   reports, since raw images are sparse).
/// - On failure or cancellation every `<output base>.*` file and the
///   `<output base>.d` directory are removed.
#[derive(Debug, Clone, Default)]
pub struct DibImageBuilder {
    settings: DibSettings,
}

impl DibImageBuilder {
    /// A builder with `settings`.
    pub fn new(settings: DibSettings) -> Self {
        Self { settings }
    }

    /// Run the build; on error the caller removes the outputs.
    async fn run(
        &self,
        spec: &BuildSpec,
        cancel: &CancellationToken,
    ) -> Result<Vec<BuiltFile>, DibError> {
        let cmd = dib_command(spec, self.settings.script_dir.as_deref())?;
        if let Some(dir) = spec.output_base.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| DibError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?;
        }
        let mut log = match &spec.log_path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| DibError::Io {
                            path: dir.to_path_buf(),
                            source: e,
                        })?;
                }
                let file = tokio::fs::File::create(path)
                    .await
                    .map_err(|e| DibError::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                Some((path.clone(), file))
            }
            None => None,
        };
        tracing::info!(command = %cmd.display(), log = ?spec.log_path, "running diskimage-builder");

        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DibError::Spawn {
                command: cmd.display(),
                source: e,
            })?;

        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, tx.clone()));
        }
        drop(tx);

        let mut streams_open = true;
        let status = loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.stop(&mut child).await;
                    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
                        write_log(&mut log, &line).await;
                    }
                    return Err(DibError::Cancelled { image: spec.diskimage.clone(), build: spec.build_id.clone() });
                }
                line = rx.recv(), if streams_open => match line {
                    Some(line) => {
                        tracing::debug!(target: "nodepool_dib::output", "{}", String::from_utf8_lossy(&line).trim_end());
                        write_log(&mut log, &line).await;
                    }
                    None => streams_open = false,
                },
                status = child.wait() => break status.map_err(|e| DibError::Spawn { command: cmd.display(), source: e })?,
            }
        };
        // Lines still buffered after the exit (grandchildren may hold the
        // pipes open: do not wait for them forever).
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            write_log(&mut log, &line).await;
        }
        let code = status.code();
        let exit_line = match code {
            Some(c) => format!("Exit code: {c}\n"),
            None => format!("Exit code: {status}\n"),
        };
        write_log(&mut log, exit_line.as_bytes()).await;
        if let Some((_, file)) = &mut log {
            let _ = file.flush().await;
        }
        if !status.success() {
            return Err(DibError::Failed {
                image: spec.diskimage.clone(),
                build: spec.build_id.clone(),
                status: exit_line
                    .trim_end()
                    .trim_start_matches("Exit code: ")
                    .to_string(),
                log: spec.log_path.clone(),
            });
        }
        let mut built = Vec::new();
        for format in &spec.formats {
            let path = output_path(spec, format);
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|_| DibError::MissingOutput { path: path.clone() })?;
            use std::os::unix::fs::MetadataExt;
            let size = meta.blocks() * 512;
            tracing::info!(image = %spec.diskimage, format = %format, size, path = %path.display(), "image file built");
            built.push(BuiltFile {
                format: format.clone(),
                path,
                size,
            });
        }
        Ok(built)
    }

    /// SIGTERM the process group, then SIGKILL it after the grace period.
    async fn stop(&self, child: &mut Child) {
        let Some(pid) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            let _ = child.kill().await;
            return;
        };
        tracing::info!(
            pid = pid.as_raw_nonzero().get(),
            "stopping the build's process group"
        );
        if rustix::process::kill_process_group(pid, rustix::process::Signal::TERM).is_err() {
            let _ = child.kill().await;
            return;
        }
        if tokio::time::timeout(self.settings.kill_grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!("build did not stop after SIGTERM; killing it");
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.kill().await;
        }
        // Reap anything of the group still around.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

async fn forward_lines<R: AsyncRead + Unpin>(reader: R, tx: mpsc::Sender<Vec<u8>>) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn write_log(log: &mut Option<(PathBuf, tokio::fs::File)>, line: &[u8]) {
    if let Some((path, file)) = log {
        if let Err(e) = file.write_all(line).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the build log");
            *log = None;
        }
    }
}

/// Remove every `<output base>.*` file and the `<output base>.d`
/// directory. Safe when nothing exists.
pub fn remove_outputs(output_base: &Path) -> std::io::Result<()> {
    let (Some(dir), Some(base)) = (
        output_base.parent(),
        output_base.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(());
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let prefix = format!("{base}.");
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let result = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => tracing::info!(path = %path.display(), "removed partial build output"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[async_trait]
impl ImageBuilder for DibImageBuilder {
    async fn build(
        &self,
        spec: &BuildSpec,
        cancel: CancellationToken,
    ) -> nodepool_core::Result<Vec<BuiltFile>> {
        let span =
            tracing::info_span!("dib_build", image = %spec.diskimage, build = %spec.build_id);
        let result = tracing::Instrument::instrument(self.run(spec, &cancel), span).await;
        if result.is_err() {
            if let Err(e) = remove_outputs(&spec.output_base) {
                tracing::warn!(error = %e, "removing partial outputs failed");
            }
        }
        result.map_err(Into::into)
    }
}
