//! The smallest HTTP/1.1 that drives Envoy: keep-alive requests written from pre-built bytes,
//! responses framed by `Content-Length` only, and a trivial upstream. Hand-rolled because the
//! load generator shares two cores with what it measures: every microsecond it spends is
//! taken from Envoy and mcp-authz.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A blocking `GET path` on a fresh connection: `(status, body)`; for admin endpoints.
pub fn get_blocking(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// End of the header block, and the `Content-Length` it declares (0 when absent).
fn parse_head(buf: &[u8]) -> Option<(usize, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..end];
    let mut len = 0;
    for line in head.split(|&b| b == b'\n').skip(1) {
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            len = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    Some((end, len))
}

/// One keep-alive client connection.
pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send `request` (a complete HTTP/1.1 request) and read one response; its status.
    pub async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some((head, len)) = parse_head(&self.buf)
                && self.buf.len() >= head + len
            {
                let status = std::str::from_utf8(self.buf.get(9..12).unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Ok(status);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A trivial MCP server stand-in: every request gets the same small JSON-RPC result.
pub async fn upstream(listener: TcpListener) {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                while let Some((head, len)) = parse_head(&buf) {
                    if buf.len() < head + len {
                        break;
                    }
                    buf.drain(..head + len);
                    if stream.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}
