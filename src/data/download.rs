//! Downloads a file from the first mirror that serves it with the expected MD5.
//!
//! The body streams into a hidden temporary file beside the destination and is renamed
//! into place only once its MD5 matches, so an interrupted or bad download never
//! leaves a file that looks complete; on failure the temporary file is removed.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use md5::{Digest, Md5};

/// Long enough for a slow network, short enough that a dead mirror is soon skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled transfer fails after this long without a byte, whatever the total time.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CHUNK_SIZE: usize = 64 * 1024;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// A file to download: its name on the mirrors and on disk, and its MD5 in hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub md5: String,
}

/// Downloads `file` into `dest_dir`, trying each mirror (a base URL) in turn.
///
/// Returns the path of the downloaded file. When every mirror fails, the error lists
/// each mirror's failure and says where to put the file by hand.
pub fn download(file: &RemoteFile, mirrors: &[String], dest_dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dest_dir).map_err(|error| {
        anyhow!(
            "{}: cannot create the data directory: {error}",
            dest_dir.display()
        )
    })?;
    let dest = dest_dir.join(&file.name);
    let agent = new_agent();
    let mut failures = Vec::new();
    for mirror in mirrors {
        let url = file_url(mirror, &file.name);
        match download_from(&agent, &url, file, &dest) {
            Ok(()) => return Ok(dest),
            Err(error) => failures.push(format!("{url}: {error:#}")),
        }
    }
    if failures.is_empty() {
        bail!("{}: cannot download it: no mirror is configured", file.name);
    }
    bail!(
        "{}: every mirror failed ({}); download it by hand from one of those addresses into {} (or point --data-dir at a folder that holds it)",
        file.name,
        failures.join("; "),
        dest_dir.display()
    )
}

fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_resolve(Some(CONNECT_TIMEOUT))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .new_agent()
}

fn file_url(mirror: &str, name: &str) -> String {
    format!("{}/{name}", mirror.trim_end_matches('/'))
}

fn download_from(agent: &ureq::Agent, url: &str, file: &RemoteFile, dest: &Path) -> Result<()> {
    let mut response = agent.get(url).call()?;
    let total = response.body().content_length();
    let mut body = response.body_mut().as_reader();
    let mut partial = PartialFile::create(dest)?;
    let mut progress = Progress::start(&file.name, url, total);
    let md5 = copy_hashing(&mut body, &mut partial.file, &mut progress)?;
    if !md5.eq_ignore_ascii_case(&file.md5) {
        bail!(
            "MD5 mismatch: got {md5}, expected {} (the mirror served a different or damaged file)",
            file.md5
        );
    }
    partial.persist(dest)?;
    progress.finish();
    Ok(())
}

/// Copies `reader` into `writer` and returns the MD5 of what passed through, in hex.
fn copy_hashing(
    reader: &mut impl Read,
    writer: &mut impl Write,
    progress: &mut Progress,
) -> Result<String> {
    let mut hasher = Md5::new();
    let mut buffer = vec![0; CHUNK_SIZE];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(anyhow!(
                    "transfer failed after {} bytes: {error}",
                    progress.received
                ));
            }
        };
        hasher.update(&buffer[..read]);
        writer
            .write_all(&buffer[..read])
            .context("cannot write the temporary file")?;
        progress.advance(read as u64);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// A temporary file beside the destination, removed on drop unless persisted.
struct PartialFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl PartialFile {
    fn create(dest: &Path) -> Result<Self> {
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let path = dest.with_file_name(format!(".{name}.{}.part", std::process::id()));
        let file = File::create(&path)
            .with_context(|| format!("{}: cannot create the temporary file", path.display()))?;
        Ok(Self {
            path,
            file,
            persisted: false,
        })
    }

    /// Flushes to disk and renames onto `dest` in one step, so `dest` is never partial.
    fn persist(mut self, dest: &Path) -> Result<()> {
        self.file
            .sync_all()
            .context("cannot flush the temporary file")?;
        fs::rename(&self.path, dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                dest.display()
            )
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reports download progress on stderr: a live line on a terminal, else start and end lines.
struct Progress {
    name: String,
    total: Option<u64>,
    received: u64,
    live: bool,
    last_shown: Instant,
}

impl Progress {
    fn start(name: &str, url: &str, total: Option<u64>) -> Self {
        let live = io::stderr().is_terminal();
        if !live {
            eprintln!("downloading {url}");
        }
        Self {
            name: name.to_owned(),
            total,
            received: 0,
            live,
            last_shown: Instant::now(),
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.received += bytes;
        if self.live && self.last_shown.elapsed() >= PROGRESS_INTERVAL {
            self.last_shown = Instant::now();
            eprint!("\r{}", self.line());
        }
    }

    fn finish(&self) {
        if !self.live {
            eprintln!("downloaded {}", self.line());
        }
    }

    fn line(&self) -> String {
        let received = human_size(self.received);
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {received} of {} ({}%)",
                self.name,
                human_size(total),
                self.received * 100 / total
            ),
            _ => format!("{}: {received}", self.name),
        }
    }
}

/// Ends the live line, whether the download succeeded or not, so later output starts clean.
impl Drop for Progress {
    fn drop(&mut self) {
        if self.live {
            eprintln!("\r{}", self.line());
        }
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}
