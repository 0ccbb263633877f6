//! A keep-alive HTTP/1.1 connection that sends PUTs and reads their replies,
//! and nothing more, shared by the benchmark load generators: a general
//! client costs several times more CPU per request, and on a 2-core machine
//! the load generator's CPU is taken from the server or from dnsperf.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// One connection to the admin API, opened on first use and after an error.
pub struct PutConnection {
    /// `host:port` of the API.
    addr: String,
    stream: Option<tokio::io::BufReader<tokio::net::TcpStream>>,
    /// Request bytes, reused.
    request: Vec<u8>,
    /// Reply header line, reused.
    line: String,
    /// Reply body, reused.
    body: Vec<u8>,
}

/// A reply other than 200, or a transport failure.
pub enum PutError {
    /// The server answered with this status; the connection stays open.
    Status(u16, String),
    /// Connecting, writing or reading failed, or timed out.
    Transport(&'static str),
}

impl std::fmt::Display for PutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PutError::Status(status, body) => write!(f, "http {status} {body}"),
            PutError::Transport(what) => f.write_str(what),
        }
    }
}

impl PutConnection {
    /// A connection to the API at `api` (`http://host:port`).
    pub fn new(api: &str) -> Self {
        Self {
            addr: api
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            stream: None,
            request: Vec::with_capacity(512),
            line: String::with_capacity(128),
            body: Vec::with_capacity(1024),
        }
    }

    /// PUTs `body` (JSON) at `path`; on 200, the `X-Signpost-Index` it
    /// carried, if any.
    pub async fn put(&mut self, path: &str, body: &[u8]) -> Result<Option<u64>, PutError> {
        let result = tokio::time::timeout(Duration::from_secs(60), self.exchange(path, body))
            .await
            .unwrap_or(Err(PutError::Transport("timeout")));
        if let Err(PutError::Transport(_)) = result {
            self.stream = None;
        }
        result
    }

    /// Opens the connection, if it is not open.
    pub async fn connect(&mut self) -> Result<(), PutError> {
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|_| PutError::Transport("connect"))?;
            stream
                .set_nodelay(true)
                .map_err(|_| PutError::Transport("connect"))?;
            self.stream = Some(tokio::io::BufReader::new(stream));
        }
        Ok(())
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<Option<u64>, PutError> {
        use std::io::Write as _;
        self.connect().await?;
        let stream = self.stream.as_mut().expect("connected above");
        self.request.clear();
        write!(
            self.request,
            "PUT {path} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("write to a Vec");
        self.request.extend_from_slice(body);
        let transport = |_| PutError::Transport("transport");
        stream
            .get_mut()
            .write_all(&self.request)
            .await
            .map_err(transport)?;
        self.line.clear();
        stream.read_line(&mut self.line).await.map_err(transport)?;
        let status: u16 = self
            .line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(PutError::Transport("transport"))?;
        let (mut length, mut index) = (0usize, None);
        loop {
            self.line.clear();
            if stream.read_line(&mut self.line).await.map_err(transport)? == 0 {
                return Err(PutError::Transport("transport"));
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value
                        .trim()
                        .parse()
                        .map_err(|_| PutError::Transport("transport"))?;
                } else if name.eq_ignore_ascii_case("x-signpost-index") {
                    index = value.trim().parse().ok();
                }
            }
        }
        self.body.resize(length, 0);
        stream.read_exact(&mut self.body).await.map_err(transport)?;
        if status == 200 {
            Ok(index)
        } else {
            let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
            Err(PutError::Status(status, text.into_owned()))
        }
    }
}
