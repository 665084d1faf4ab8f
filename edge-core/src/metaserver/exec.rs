//! `pods/{name}/exec`: `kubectl exec` at the edge, offline, as the kubelet
//! serves it. The container is resolved as for logs, the runtime prepares
//! the command (CRI `Exec`, through Edged's thread) and answers with a URL
//! on its streaming server; the request (WebSocket `v4`/`v5.channel.k8s.io`
//! or SPDY, whichever the client upgrades with) is passed on to that URL
//! and the connection is then relayed both ways until either side ends.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;

use super::logs::{Refusal, container_of};
use super::{Request, Source, http, status_json};
use crate::workloads::ExecRequest;

/// Answers an exec request on `stream`, which it then owns.
pub(super) async fn serve<S>(
    mut stream: S,
    req: &Request,
    shared: &Source,
    namespace: &str,
    name: &str,
) where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    match prepare(req, shared, namespace, name).await {
        Ok((url, upstream)) => relay(stream, req, &url, upstream).await,
        Err((code, reason, message)) => {
            let body = status_json(code, reason, &message, None);
            let _ = http::write_json(&mut stream, code, body, true).await;
        }
    }
}

/// The runtime's streaming URL for the request, and a connection to it.
async fn prepare(
    req: &Request,
    shared: &Source,
    namespace: &str,
    name: &str,
) -> Result<(Url, TcpStream), Refusal> {
    let (_, container) = container_of(req, shared, namespace, name)?;
    let command: Vec<String> = req.params("command").map(str::to_owned).collect();
    if command.is_empty() {
        let m = "you must specify at least 1 command".to_owned();
        return Err((400, "BadRequest", m));
    }
    let flag = |p: &str| matches!(req.param(p), Some("true" | "1"));
    let exec = ExecRequest {
        namespace: namespace.to_owned(),
        pod: name.to_owned(),
        container: container.clone(),
        command,
        tty: flag("tty"),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
    };
    let Some(workloads) = &shared.exec else {
        let m = "Edged is disabled on this node: nothing runs in its pods".to_owned();
        return Err((503, "ServiceUnavailable", m));
    };
    let url = match workloads.exec(exec).await {
        Ok(Some(url)) => url,
        Ok(None) => {
            let m = format!("container {container} is not running in pod {name}");
            return Err((400, "BadRequest", m));
        }
        Err(e) => {
            return Err((
                500,
                "InternalError",
                format!("the runtime refused the exec: {e}"),
            ));
        }
    };
    let url = Url::parse(&url).ok_or_else(|| {
        (
            500,
            "InternalError",
            format!("the runtime's streaming URL {url:?} is not http://host:port/path"),
        )
    })?;
    let upstream = TcpStream::connect(url.authority.as_str())
        .await
        .map_err(|e| {
            (
                500,
                "InternalError",
                format!("cannot reach the runtime's streaming server: {e}"),
            )
        })?;
    Ok((url, upstream))
}

/// An `http://authority/path` URL.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    authority: String,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Option<Url> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find('/')?);
        (!authority.is_empty()).then(|| Url {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The client's request head, sent to the runtime's URL instead.
fn forwarded_head(req: &Request, url: &Url) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, url.path, url.authority
    );
    for (name, value) in &req.headers {
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("authorization") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Relays `client` and `upstream` both ways until both directions end;
/// the end of one side's output is passed on to the other.
async fn relay<S>(client: S, req: &Request, url: &Url, mut upstream: TcpStream)
where
    S: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let (r, _) = upstream.write_all(forwarded_head(req, url)).await;
    if r.is_err() {
        return;
    }
    let (mut client_in, mut client_out) = client.into_split();
    let (mut runtime_in, mut runtime_out) = upstream.into_split();
    let to_runtime = async {
        let _ = monoio::io::copy(&mut client_in, &mut runtime_out).await;
        let _ = runtime_out.shutdown().await;
    };
    let to_client = async {
        let _ = monoio::io::copy(&mut runtime_in, &mut client_out).await;
        let _ = client_out.shutdown().await;
    };
    monoio::join!(to_runtime, to_client);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_urls() {
        assert_eq!(
            Url::parse("http://127.0.0.1:4123/exec/AbC"),
            Some(Url {
                authority: "127.0.0.1:4123".to_owned(),
                path: "/exec/AbC".to_owned()
            })
        );
        for bad in [
            "https://127.0.0.1:1/exec/x",
            "http://127.0.0.1:1",
            "http:///x",
            "",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }
}
