//! An HTTP proxy between keywheel and a real server that injects faults by
//! request pattern: an error status (with or without `Retry-After`), a delay
//! before forwarding, a connection closed without a response, a request
//! never responded to, and responses that the server sent but that arrive
//! slowly, cut short or reset halfway. Every request is logged with its time, so
//! tests can check what keywheel sent and when.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use regex::Regex;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and body, and a `Retry-After` header when set.
    Status {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// Wait, then forward.
    Delay(Duration),
    /// Wait until the test opens the gate, then forward.
    Gate(GateReceiver),
    /// Close the connection without answering.
    Reset,
    /// Read the request and never respond, so the client's timeout must
    /// end the call. The request is not forwarded.
    Hang,
    /// Forward, then send the headers at once and the body in four parts,
    /// each after this pause.
    SlowBody(Duration),
    /// Forward, then send the headers with the full `Content-Length` and
    /// half the body, and close the connection.
    Truncate,
    /// Forward, then send the headers and half the body, and reset the
    /// connection (a TCP RST).
    ResetMidBody,
}

/// Holds requests that a [`Fault::Gate`] stopped until [`Gate::open`].
pub struct Gate(tokio::sync::watch::Sender<bool>);

/// The side of a [`Gate`] that a fault waits on.
#[derive(Clone, Debug)]
pub struct GateReceiver(tokio::sync::watch::Receiver<bool>);

impl Default for Gate {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }
}

impl Gate {
    /// Returns the fault that holds a request until the gate opens.
    pub fn fault(&self) -> Fault {
        Fault::Gate(GateReceiver(self.0.subscribe()))
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Option<String>,
    pub path: Regex,
    /// A header (lower-case name) whose value must match, when set.
    pub header: Option<(String, Regex)>,
    /// A pattern the request body must match, when set.
    pub body: Option<Regex>,
    /// How many matching requests get the fault.
    pub count: u32,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: Option<&str>, path: &str, count: u32, fault: Fault) -> Self {
        Self {
            method: method.map(str::to_string),
            path: Regex::new(path).expect("valid regex"),
            header: None,
            body: None,
            count,
            fault,
        }
    }

    /// Also requires header `name` to match `pattern`. APIs that send every
    /// call to `/`, such as AWS's JSON protocol, name the call in a header.
    pub fn with_header(mut self, name: &str, pattern: &str) -> Self {
        let regex = Regex::new(pattern).expect("valid regex");
        self.header = Some((name.to_ascii_lowercase(), regex));
        self
    }

    /// Also requires the body to match `pattern`. AWS's query protocol
    /// names the call in the form body (`Action=...`).
    pub fn with_body(mut self, pattern: &str) -> Self {
        self.body = Some(Regex::new(pattern).expect("valid regex"));
        self
    }

    /// Returns whether this rule applies to request `seen`, whatever its
    /// remaining count.
    pub fn matches_seen(&self, seen: &Seen) -> bool {
        let any_count = Self {
            count: 1,
            ..self.clone()
        };
        any_count.matches(&seen.method, &seen.target, &seen.headers, &seen.body)
    }

    fn matches(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> bool {
        let header_ok = self.header.as_ref().is_none_or(|(name, pattern)| {
            headers
                .iter()
                .any(|(n, value)| n == name && pattern.is_match(value))
        });
        let body_ok = self
            .body
            .as_ref()
            .is_none_or(|pattern| pattern.is_match(&String::from_utf8_lossy(body)));
        self.count > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && self.path.is_match(target)
            && header_ok
            && body_ok
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
}

struct Shared {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    client: reqwest::Client,
}

pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            client: reqwest::Client::new(),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(thread_shared, addr_tx, shutdown_rx));
        });
        let addr = addr_rx.recv().expect("proxy address");
        Self {
            url: format!("http://{addr}"),
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn inject(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests whose path matches `pattern`.
    pub fn seen_matching(&self, method: &str, pattern: &str) -> Vec<Seen> {
        let regex = Regex::new(pattern).expect("valid regex");
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && regex.is_match(&s.target))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    addr_tx: std::sync::mpsc::Sender<SocketAddr>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let _ = addr_tx.send(listener.local_addr().expect("proxy address"));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        // A second handle on the socket, so that a fault can make the
        // close a reset: hyper owns the stream and only ever closes it.
        let Ok(socket) = socket_handle(&stream) else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(shared.clone(), socket.clone(), request)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// A duplicate of a connection's socket, dropped when a fault resets it.
type SocketHandle = Arc<Mutex<Option<std::net::TcpStream>>>;

fn socket_handle(stream: &tokio::net::TcpStream) -> std::io::Result<SocketHandle> {
    use std::os::fd::AsFd as _;
    let owned = stream.as_fd().try_clone_to_owned()?;
    Ok(Arc::new(Mutex::new(Some(std::net::TcpStream::from(owned)))))
}

/// Makes the connection's close a TCP reset: with a zero linger time the
/// kernel sends RST instead of FIN once the last handle closes.
fn arm_reset(socket: &SocketHandle) {
    if let Some(duplicate) = socket.lock().unwrap().take() {
        let _ = rustix::net::sockopt::set_socket_linger(&duplicate, Some(Duration::ZERO));
    }
}

#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the fault proxy")
    }
}

impl std::error::Error for ResetConnection {}

type ProxyBody = BoxBody<Bytes, ResetConnection>;

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    shared: Arc<Shared>,
    socket: SocketHandle,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ResetConnection> {
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let headers = request.headers().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let fault = {
        let mut rules = shared.rules.lock().unwrap();
        let found = rules
            .iter_mut()
            .find(|rule| rule.matches(&method, &target, &header_list, &body));
        found.map(|rule| {
            rule.count -= 1;
            rule.fault.clone()
        })
    };
    shared.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        headers: header_list,
        body: body.to_vec(),
        at: Instant::now(),
        fault: fault.clone(),
    });

    match &fault {
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => {
            let mut response = Response::builder()
                .status(*status)
                .header("content-type", "application/json");
            if let Some(value) = retry_after {
                response = response.header("retry-after", value);
            }
            return Ok(response.body(full(body.clone())).expect("response"));
        }
        Some(Fault::Reset) => return Err(ResetConnection),
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Delay(delay)) => tokio::time::sleep(*delay).await,
        Some(Fault::Gate(gate)) => {
            let mut gate = gate.0.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        _ => {}
    }

    let url = format!("{}{}", shared.upstream, target);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut forward = shared.client.request(method, url).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.send().await else {
        return Err(ResetConnection);
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let body = match fault {
        Some(Fault::SlowBody(pause)) => slow_body(bytes, pause),
        Some(Fault::Truncate) => {
            response = response.header("content-length", bytes.len());
            cut_body(bytes, None)
        }
        Some(Fault::ResetMidBody) => {
            response = response.header("content-length", bytes.len());
            cut_body(bytes, Some(socket))
        }
        _ => full(bytes),
    };
    Ok(response.body(body).expect("response"))
}

/// Sends `bytes` in four parts, each after `pause`.
fn slow_body(bytes: Bytes, pause: Duration) -> ProxyBody {
    let part = bytes.len().div_ceil(4).max(1);
    let parts: Vec<Bytes> = (0..bytes.len())
        .step_by(part)
        .map(|start| bytes.slice(start..(start + part).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::unfold(parts.into_iter(), move |mut parts| async move {
        let next = parts.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok(Frame::data(next)), parts))
    });
    StreamBody::new(stream).boxed()
}

/// Sends the first half of `bytes`, then fails the body, so hyper closes
/// the connection before `Content-Length` is reached: with a FIN, or with
/// a RST when `reset` is given.
fn cut_body(bytes: Bytes, reset: Option<SocketHandle>) -> ProxyBody {
    let half = bytes.slice(..bytes.len() / 2);
    let stream = futures_util::stream::unfold(0, move |step| {
        let half = half.clone();
        let reset = reset.clone();
        async move {
            match step {
                0 => Some((Ok(Frame::data(half)), 1)),
                1 => {
                    // Lets the half body leave before the connection goes.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(socket) = &reset {
                        arm_reset(socket);
                    }
                    Some((Err(ResetConnection), 2))
                }
                _ => None,
            }
        }
    });
    StreamBody::new(stream).boxed()
}

pub fn infallible<T>(value: T) -> Result<T, Infallible> {
    Ok(value)
}
