//! Reading untrusted files where a failure cannot take the server down.
//!
//! Uploads, imported URLs and the pages an analysis reads are parsed by code that a hostile
//! file can drive into deep recursion (a PDF's nested arrays), huge allocations (a
//! decompression bomb) or long loops. [`read`] runs the parser in a child process of this
//! executable (`coachlibre __read-file FORMAT`, bytes on its standard input, the text on its
//! standard output) when the binary has enabled it with [`isolate_with`]:
//! - a crash, an abort or running out of memory ends the child only, and the file gets a
//!   clear error;
//! - the child has at most [`READ_BUDGET`] of wall time (then it is killed), a memory limit and
//!   a high OOM score (the kernel kills it before the server);
//! - dropping the future (a request cancelled or timed out, a job stopped) kills it at once.
//!
//! Without a helper (a library embedding CoachLibre, the in-process test servers) files are
//! parsed on a blocking thread of this process, with the same bounds on depth and size but no
//! wall-time limit: the parsers written here walk their trees without recursion and refuse
//! documents nested deeper than [`crate::extract::MAX_HTML_DEPTH`].

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::extract::{self, ExtractError, Format, MAX_UPLOAD_BYTES};

/// The first argument that makes the executable a file reader instead of the CLI.
pub const CHILD_ARG: &str = "__read-file";
/// Longest a file may take to read.
pub const READ_BUDGET: Duration = Duration::from_secs(60);
/// Address space of a reading child: far more than any real file needs (a 20 MiB PDF takes
/// a few hundred MiB), far less than a decompression bomb wants.
const CHILD_MEMORY: u64 = 4 << 30;
/// Stack of the child's reading thread: deep enough for any real document.
const CHILD_STACK: usize = 64 << 20;

static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Read files in child processes of `exe`, which must call [`child_main`] first thing in its
/// `main`. Set once, at start; later calls are ignored.
pub fn isolate_with(exe: PathBuf) {
    let _ = HELPER.set(exe);
}

/// Whether files are read in child processes.
pub fn isolated() -> bool {
    HELPER.get().is_some()
}

/// The text of `bytes` in `format`, read within the bounds above.
pub async fn read(bytes: Vec<u8>, format: Format) -> Result<String, ExtractError> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(ExtractError::TooLarge(bytes.len()));
    }
    match (format, HELPER.get()) {
        (Format::Html | Format::Pdf, Some(exe)) => match in_child(exe, &bytes, format).await {
            Ok(result) => result,
            Err(e) => {
                // The executable is gone (replaced by an upgrade) or cannot start: keep serving.
                tracing::warn!(error = %e, "the file reader could not start; reading in process");
                in_process(bytes, format).await
            }
        },
        _ => in_process(bytes, format).await,
    }
}

async fn in_process(bytes: Vec<u8>, format: Format) -> Result<String, ExtractError> {
    tokio::task::spawn_blocking(move || read_here(bytes, format))
        .await
        .unwrap_or_else(|_| Err(corrupt(format, "its structure is invalid")))
}

/// What a reading child does, in this process: [`extract::extract`] on a thread with the
/// child's deep stack, a panic becoming an error.
pub fn read_here(bytes: Vec<u8>, format: Format) -> Result<String, ExtractError> {
    std::thread::Builder::new()
        .name("file-reader".into())
        .stack_size(CHILD_STACK)
        .spawn(move || extract::extract(&bytes, format))
        .map_err(|_| ())
        .and_then(|t| t.join().map_err(|_| ()))
        .unwrap_or_else(|()| Err(corrupt(format, "its structure is invalid")))
}

fn corrupt(format: Format, reason: &str) -> ExtractError {
    ExtractError::Corrupt {
        format: format.label(),
        reason: reason.to_owned(),
    }
}

/// Run the reader in a child; `Err` only when the child cannot be started or talked to.
async fn in_child(
    exe: &PathBuf,
    bytes: &[u8],
    format: Format,
) -> std::io::Result<Result<String, ExtractError>> {
    let mut child = tokio::process::Command::new(exe)
        .arg(CHILD_ARG)
        .arg(format.name())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let input = bytes.to_vec();
    // Written while the output is read: a large file fills both pipes.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let output = match tokio::time::timeout(READ_BUDGET, child.wait_with_output()).await {
        Ok(output) => output?,
        // Dropping the future above killed the child.
        Err(_) => return Ok(Err(ExtractError::TooSlow(READ_BUDGET.as_secs()))),
    };
    writer.abort();
    if !output.status.success() {
        tracing::warn!(status = %output.status, format = format.name(), "a file reader failed");
        return Ok(Err(corrupt(
            format,
            "its structure could not be read (the reader stopped)",
        )));
    }
    Ok(match decode(&output.stdout) {
        Some(Err(ExtractError::Corrupt { reason, .. })) => Err(corrupt(format, &reason)),
        Some(result) => result,
        None => Err(corrupt(format, "the reader's answer was unreadable")),
    })
}

/// When the process was started as a file reader (`CHILD_ARG FORMAT`), read standard input,
/// write the answer and return the exit code; otherwise `None`, at once.
pub fn child_main() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != CHILD_ARG {
        return None;
    }
    let format = args
        .next()
        .and_then(|f| Format::from_name(f.to_str()?))
        .unwrap_or(Format::Text);
    limit_self();
    let mut bytes = Vec::new();
    let take = u64::try_from(MAX_UPLOAD_BYTES).unwrap_or(u64::MAX) + 1;
    if std::io::stdin().take(take).read_to_end(&mut bytes).is_err() {
        return Some(std::process::ExitCode::FAILURE);
    }
    let result = read_here(bytes, format);
    let mut out = std::io::stdout().lock();
    match out.write_all(&encode(&result)).and_then(|()| out.flush()) {
        Ok(()) => Some(std::process::ExitCode::SUCCESS),
        Err(_) => Some(std::process::ExitCode::FAILURE),
    }
}

/// Memory and CPU limits of a reading child, and first in line for the OOM killer.
fn limit_self() {
    #[cfg(unix)]
    {
        let _ = rlimit::setrlimit(rlimit::Resource::AS, CHILD_MEMORY, CHILD_MEMORY);
        let cpu = READ_BUDGET.as_secs() + 30;
        let _ = rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu);
    }
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
}

/// The child's answer on the wire: a tag line, then the text or the error's details.
pub fn encode(result: &Result<String, ExtractError>) -> Vec<u8> {
    let (tag, body) = match result {
        Ok(text) => ("ok", text.clone()),
        Err(ExtractError::Empty) => ("empty", String::new()),
        Err(ExtractError::Encrypted) => ("encrypted", String::new()),
        Err(ExtractError::Unsupported) => ("unsupported", String::new()),
        Err(ExtractError::TooLarge(n)) => ("large", n.to_string()),
        Err(ExtractError::TooSlow(s)) => ("slow", s.to_string()),
        Err(ExtractError::TooDeep { depth, limit }) => ("deep", format!("{depth} {limit}")),
        Err(ExtractError::Corrupt { reason, .. }) => ("corrupt", reason.clone()),
    };
    format!("{tag}\n{body}").into_bytes()
}

/// A child's answer read back; `None` when it is not one (a reader that died half-way).
pub fn decode(out: &[u8]) -> Option<Result<String, ExtractError>> {
    let out = std::str::from_utf8(out).ok()?;
    let (tag, body) = out.split_once('\n')?;
    let number = |s: &str| s.trim().parse::<usize>().ok();
    Some(match tag {
        "ok" => Ok(body.to_owned()),
        "empty" => Err(ExtractError::Empty),
        "encrypted" => Err(ExtractError::Encrypted),
        "unsupported" => Err(ExtractError::Unsupported),
        "large" => Err(ExtractError::TooLarge(number(body)?)),
        "slow" => Err(ExtractError::TooSlow(body.trim().parse().ok()?)),
        "deep" => {
            let (depth, limit) = body.split_once(' ')?;
            Err(ExtractError::TooDeep {
                depth: number(depth)?,
                limit: number(limit)?,
            })
        }
        // The format is the caller's; it fills it in.
        "corrupt" => Err(ExtractError::Corrupt {
            format: "",
            reason: body.to_owned(),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_cross_the_pipe_unchanged() {
        for r in [
            Ok("# T\n\nline\nline".to_owned()),
            Err(ExtractError::Empty),
            Err(ExtractError::Encrypted),
            Err(ExtractError::TooLarge(7)),
            Err(ExtractError::TooSlow(60)),
            Err(ExtractError::TooDeep {
                depth: 10_001,
                limit: 512,
            }),
        ] {
            assert_eq!(decode(&encode(&r)), Some(r));
        }
        assert_eq!(decode(b"nonsense"), None);
    }

    #[tokio::test]
    async fn without_a_helper_files_are_read_in_process() {
        assert!(!isolated());
        let text = read(b"<p>Bonjour</p>".to_vec(), Format::Html).await;
        assert_eq!(text.as_deref(), Ok("Bonjour"));
    }
}
