//! The little HTTP/1.1 the MetaServer needs: read a request head with
//! httparse (bounded), write a whole response or a chunked stream.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Largest request body skipped (the API is read-only).
const MAX_BODY: usize = 1 << 20;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The client asked to close after the response.
    pub close: bool,
    /// The `Accept` header (kubectl asks for a Table with it).
    pub accept: String,
    /// The `Authorization` header.
    pub authorization: String,
    /// Every header, in order (an exec forwards them to the runtime).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Every value of a repeated query parameter (`command`).
    pub fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("unparsable request: {0}")]
    Parse(String),
}

/// A request head parsed from the front of a buffer.
#[derive(Debug)]
pub struct Head {
    pub request: Request,
    /// Bytes of the head.
    pub len: usize,
    /// Bytes of the body that follows (Content-Length).
    pub body: usize,
}

/// Parses the request head at the front of `buf`: `None` while it is
/// incomplete. A head over 16 KiB or a body over 1 MiB is refused.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            request: to_request(&req)?,
            len,
            body: content_length(&req)?,
        })),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HttpError::Parse(e.to_string())),
    }
}

/// Reads the next request from `stream`; `None` at a clean end. `buf`
/// keeps bytes that arrived after the request.
pub(super) async fn read_request<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, HttpError> {
    loop {
        if !buf.is_empty()
            && let Some(head) = parse_head(buf)?
        {
            buf.drain(..head.len);
            skip_body(stream, buf, head.body).await?;
            return Ok(Some(head.request));
        }
        if read_more(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(HttpError::Parse("truncated request".to_owned()))
            };
        }
    }
}

async fn read_more<S: AsyncReadRent>(stream: &mut S, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let (r, chunk) = stream.read(Vec::with_capacity(4096)).await;
    let n = r?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn skip_body<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    mut len: usize,
) -> Result<(), HttpError> {
    while len > 0 {
        if buf.is_empty() && read_more(stream, buf).await? == 0 {
            return Err(HttpError::Parse("truncated body".to_owned()));
        }
        let take = len.min(buf.len());
        buf.drain(..take);
        len -= take;
    }
    Ok(())
}

fn content_length(req: &httparse::Request<'_, '_>) -> Result<usize, HttpError> {
    let Some(h) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(0);
    };
    let len = std::str::from_utf8(h.value)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| HttpError::Parse("bad Content-Length".to_owned()))?;
    if len > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    Ok(len)
}

fn to_request(req: &httparse::Request<'_, '_>) -> Result<Request, HttpError> {
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let http10 = req.version == Some(0);
    let connection = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("connection"))
        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase());
    let close = match connection.as_deref() {
        Some(v) if v.contains("close") => true,
        Some(v) if v.contains("keep-alive") => false,
        _ => http10,
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .unwrap_or_default()
    };
    Ok(Request {
        method,
        path: percent_decode(path),
        query,
        close,
        accept: header("accept"),
        authorization: header("authorization"),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a whole JSON response.
pub(super) async fn write_json<S: AsyncWriteRent>(
    stream: &mut S,
    status: u16,
    body: Vec<u8>,
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    send(stream, bytes).await
}

/// Writes all of `bytes` and flushes them (through TLS to the socket).
async fn send<S: AsyncWriteRent>(stream: &mut S, bytes: Vec<u8>) -> std::io::Result<()> {
    let (r, _) = stream.write_all(bytes).await;
    r?;
    stream.flush().await
}

/// Starts a chunked stream of `content_type` (a watch, a log).
pub(super) async fn write_stream_head<S: AsyncWriteRent>(
    stream: &mut S,
    content_type: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
    );
    send(stream, head.into_bytes()).await
}

/// Writes `data` as one chunk; empty `data` ends the stream.
pub(super) async fn write_chunk<S: AsyncWriteRent>(
    stream: &mut S,
    data: &[u8],
) -> std::io::Result<()> {
    let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    send(stream, bytes).await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        503 => "Service Unavailable",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_queries() {
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
