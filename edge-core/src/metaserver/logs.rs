//! `pods/{name}/log`: a container's log from the files the runtime writes
//! under `podLogsDir` (`<ns>_<pod>_<uid>/<container>/<restart>.log`),
//! online or not, with the kubelet's options: `container`, `follow`,
//! `previous`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//! `limitBytes`. The API server's messages for a missing or ambiguous
//! container. A followed log ends when its container stops running (per
//! the status Edged reported) and everything written is sent, or when the
//! client goes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edged::logs::{LogOptions, LogRender};
use monoio::io::AsyncWriteRent;
use serde_json::Value;

use super::{Request, Source, http, status_json};

/// Bytes read from the file at a time.
const CHUNK: usize = 64 << 10;
/// Most of a file read back to find where its tail begins.
const MAX_TAIL: u64 = 16 << 20;
/// How often a followed log looks for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Which file to read and how, or the client's mistake.
struct LogFile {
    path: PathBuf,
    container: String,
    follow: bool,
    tail: Option<usize>,
    options: LogOptions,
}

/// Answers a log request; true when the connection must end.
pub(super) async fn serve<S: AsyncWriteRent>(
    stream: &mut S,
    req: &Request,
    shared: &Source,
    namespace: &str,
    name: &str,
) -> std::io::Result<bool> {
    let file = match locate(req, shared, namespace, name) {
        Ok(f) => f,
        Err((code, reason, message)) => {
            http::write_json(
                stream,
                code,
                status_json(code, reason, &message, None),
                req.close,
            )
            .await?;
            return Ok(false);
        }
    };
    http::write_stream_head(stream, "text/plain").await?;
    let running = || {
        shared
            .statuses
            .borrow()
            .get(namespace, name)
            .is_some_and(|s| {
                containers(&s["containerStatuses"])
                    .chain(containers(&s["initContainerStatuses"]))
                    .any(|c| {
                        c["name"] == file.container.as_str() && c["state"]["running"].is_object()
                    })
            })
    };
    copy(stream, &file, running).await?;
    http::write_chunk(stream, b"").await?;
    Ok(true)
}

fn containers(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A refused request: status code, reason, message.
pub(super) type Refusal = (u16, &'static str, String);

/// The stored pod `namespace/name` and the container the request names
/// (`container`, or the pod's only one), as the API server resolves it.
pub(super) fn container_of(
    req: &Request,
    shared: &Source,
    namespace: &str,
    name: &str,
) -> Result<(schema::records::StoredObject, String), Refusal> {
    let key = schema::records::ObjectKey::new(schema::kinds::POD, namespace, name);
    let not_found = || (404, "NotFound", format!("pods \"{name}\" not found"));
    let stored = shared
        .store
        .get(&key)
        .ok()
        .flatten()
        .ok_or_else(not_found)?;
    let pod: Value = serde_json::from_slice(&stored.data).map_err(|_| not_found())?;
    let names: Vec<&str> = containers(&pod["spec"]["initContainers"])
        .chain(containers(&pod["spec"]["containers"]))
        .filter_map(|c| c["name"].as_str())
        .collect();
    let bad = |m: String| (400, "BadRequest", m);
    let container = match req.param("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => c.to_owned(),
        Some(c) => return Err(bad(format!("container {c} is not valid for pod {name}"))),
        None => match containers(&pod["spec"]["containers"]).collect::<Vec<_>>()[..] {
            [only] => only["name"].as_str().unwrap_or_default().to_owned(),
            _ => {
                let all = names.join(" ");
                let m = format!(
                    "a container name must be specified for pod {name}, choose one of: [{all}]"
                );
                return Err(bad(m));
            }
        },
    };
    Ok((stored, container))
}

/// Finds the file the request names.
fn locate(req: &Request, shared: &Source, namespace: &str, name: &str) -> Result<LogFile, Refusal> {
    let (stored, container) = container_of(req, shared, namespace, name)?;
    let bad = |m: String| (400, "BadRequest", m);
    let dir = Path::new(&shared.log_root)
        .join(format!("{namespace}_{name}_{}", stored.uid))
        .join(&container);
    let previous = matches!(req.param("previous"), Some("true" | "1"));
    let mut attempts = attempts(&dir);
    let path = if previous {
        attempts.pop();
        attempts.pop().ok_or_else(|| {
            bad(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))
        })?
    } else {
        attempts.pop().ok_or_else(|| {
            bad(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            ))
        })?
    };
    let number = |p: &str| {
        req.param(p).map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{p}: {v:?} is not a number")))
        })
    };
    let since_ms = match (number("sinceSeconds").transpose()?, req.param("sinceTime")) {
        (Some(s), _) => Some(clock::unix_ms().saturating_sub(s * 1000)),
        (None, Some(t)) => Some(
            clock::parse_rfc3339(t)
                .ok_or_else(|| bad(format!("sinceTime: {t:?} is not an RFC 3339 time")))?,
        ),
        (None, None) => None,
    };
    let options = LogOptions {
        timestamps: matches!(req.param("timestamps"), Some("true" | "1")),
        since_ms,
        limit_bytes: number("limitBytes").transpose()?.map(|b| b as usize),
    };
    Ok(LogFile {
        path: dir.join(format!("{path}.log")),
        container,
        follow: !previous && matches!(req.param("follow"), Some("true" | "1")),
        tail: number("tailLines").transpose()?.map(|n| n as usize),
        options,
    })
}

/// The restart numbers of the container's log files, lowest first.
fn attempts(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    found
}

/// Sends the file as rendered, following it while `running` says so.
async fn copy<S: AsyncWriteRent>(
    stream: &mut S,
    file: &LogFile,
    running: impl Fn() -> bool,
) -> std::io::Result<()> {
    let Ok(f) = monoio::fs::File::open(&file.path).await else {
        return Ok(());
    };
    let mut at = match file.tail {
        Some(n) => tail_start(&f, std::fs::metadata(&file.path)?.len(), n).await?,
        None => 0,
    };
    let mut render = LogRender::new(file.options.clone());
    let mut buf = vec![0u8; CHUNK];
    let mut draining = false;
    loop {
        let (r, b) = f.read_at(buf, at).await;
        buf = b;
        let n = r?;
        if n > 0 {
            at += n as u64;
            let mut out = Vec::new();
            render.handle_bytes(&buf[..n], &mut out);
            if !out.is_empty() {
                http::write_chunk(stream, &out).await?;
            }
            if render.is_full() {
                return Ok(());
            }
            continue;
        }
        // At the end: a log not followed is done; a followed one waits for
        // more while its container runs, and once it has stopped is read
        // to its end once more (what it wrote on its way out).
        if !file.follow || draining {
            return Ok(());
        }
        if !running() {
            draining = true;
            continue;
        }
        monoio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Offset in the file, `size` bytes long, where its last `lines` lines
/// begin: read from the end in growing windows until `tail_offset` can
/// tell (a window past `MAX_TAIL` starts where it reaches).
async fn tail_start(f: &monoio::fs::File, size: u64, lines: usize) -> std::io::Result<u64> {
    let mut window = CHUNK as u64;
    loop {
        let start = size.saturating_sub(window);
        let buf = vec![0u8; (size - start) as usize];
        let (r, buf) = f.read_exact_at(buf, start).await;
        r?;
        if let Some(at) = edged::logs::tail_offset(&buf, start == 0, lines) {
            return Ok(start + at as u64);
        }
        if start == 0 || window >= MAX_TAIL {
            return Ok(start);
        }
        window *= 4;
    }
}
