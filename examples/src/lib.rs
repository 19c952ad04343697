//! Helpers shared by the joerl examples: logging, Ctrl-C, and the message types
//! several examples exchange.
#![warn(missing_docs)]

pub mod placement_node;
pub mod service_node;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    init_logging_at("warn")
}

/// Logs to stderr at `level` unless `RUST_LOG` says otherwise.
pub fn init_logging_at(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The command-line options every node example shares: where EPMD is, the
/// cookie, and TLS.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeOptions {
    /// EPMD address.
    #[arg(long, default_value = "127.0.0.1:4369")]
    pub epmd: std::net::SocketAddr,
    /// Cookie (default: JOERL_COOKIE, else ~/.joerl.cookie).
    #[arg(long)]
    pub cookie: Option<String>,
    /// TLS: this node's certificate (PEM). With --tls-key and --tls-ca, every
    /// connection is TLS with mutual authentication (`dist_bench gen-certs`
    /// makes a set).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: this node's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS: the CA certificate every node's certificate is signed by (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl NodeOptions {
    /// A node builder for `name` listening on 127.0.0.1:`port`, with these options.
    pub fn builder(
        &self,
        name: impl Into<String>,
        port: u16,
    ) -> anyhow::Result<joerl_dist::NodeBuilder> {
        self.builder_on(name, ([127, 0, 0, 1], port).into())
    }

    /// A node builder for `name` listening on `listen`, with these options
    /// (an error if the TLS files cannot be used).
    pub fn builder_on(
        &self,
        name: impl Into<String>,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<joerl_dist::NodeBuilder> {
        self.apply(joerl_dist::NodeBuilder::new(name, listen, self.epmd))
    }

    /// Applies the cookie and TLS options to `builder`.
    pub fn apply(
        &self,
        builder: joerl_dist::NodeBuilder,
    ) -> anyhow::Result<joerl_dist::NodeBuilder> {
        let mut b = builder;
        if let Some(c) = &self.cookie {
            b = b.cookie(c.clone());
        }
        if let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            b = b.tls(joerl_dist::TlsConfig::from_pem_files(cert, key, ca)?);
        }
        Ok(b)
    }
}

/// Resolves on Ctrl-C or SIGTERM, or after `limit` if given.
pub async fn until_stopped(limit: Option<Duration>) {
    let limit = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = limit => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = limit => {}
    }
}

/// Round-trip times summarised in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
}

/// Summarises round-trip samples given in nanoseconds (sorts them in place).
/// Panics on an empty slice.
pub fn latency(samples_ns: &mut [u32]) -> Latency {
    samples_ns.sort_unstable();
    let pct = |p: f64| samples_ns[((samples_ns.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let mean = samples_ns.iter().map(|&s| s as f64).sum::<f64>() / samples_ns.len() as f64 / 1000.0;
    Latency {
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        mean_us: mean,
    }
}

/// A greeting one node sends another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Greeting {
    /// The sending node.
    pub from_node: String,
    /// Free text.
    pub text: String,
}
joerl_dist::remote_message!(Greeting, "joerl_examples::Greeting");

/// A ping with a sequence number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ping(pub u64);
joerl_dist::remote_message!(Ping, "joerl_examples::Ping");

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Pong(pub u64);
joerl_dist::remote_message!(Pong, "joerl_examples::Pong");

/// A chat line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatLine {
    /// Who wrote it.
    pub from: String,
    /// What they wrote.
    pub text: String,
}
joerl_dist::remote_message!(ChatLine, "joerl_examples::ChatLine");

/// Requests the compute/echo servers of `remote_actors` and `cluster_demo` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Echo the text back.
    Echo(String),
    /// Sum of squares 1..=n.
    SumSquares(u64),
    /// Which node serves this.
    WhoAreYou,
}
joerl_dist::remote_message!(Request, "joerl_examples::Request");

/// Replies to [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Echoed text.
    Echo(String),
    /// A number.
    Number(u64),
    /// A node name.
    Node(String),
}
joerl_dist::remote_message!(Reply, "joerl_examples::Reply");

/// A gen_server answering [`Request`]s with [`Reply`]s, naming its node.
pub struct Service {
    /// The node it runs on.
    pub node: String,
}

impl joerl_dist::gen_server::Request for Request {
    type Reply = Reply;
}

impl joerl_dist::gen_server::GenServer for Service {
    type Calls = (Request,);
    type Casts = ();
}

impl joerl_dist::gen_server::HandleCall<Request> for Service {
    async fn handle_call(
        &mut self,
        request: Request,
        _from: joerl_dist::gen_server::ReplyTo<Reply>,
        _ctx: &mut joerl_dist::ActorContext,
    ) -> joerl_dist::gen_server::CallResponse<Reply> {
        use joerl_dist::gen_server::CallResponse;
        match request {
            Request::Echo(s) => CallResponse::Reply(Reply::Echo(s)),
            Request::SumSquares(n) => {
                CallResponse::Reply(Reply::Number((1..=n).map(|i| i * i).sum()))
            }
            Request::WhoAreYou => CallResponse::Reply(Reply::Node(self.node.clone())),
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of one address, that can cut every
/// connection through it (both sides see the connection drop) while the two
/// ends live on. `dist_bench cuts` puts one between two nodes.
pub struct CutProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1.
    pub async fn start(target: std::net::SocketAddr) -> std::io::Result<CutProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pipes: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let p2 = pipes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let a = tokio::spawn(pump(ri, wo));
                let b = tokio::spawn(pump(ro, wi));
                p2.lock().unwrap_or_else(|e| e.into_inner()).extend([a, b]);
            }
        });
        Ok(CutProxy {
            addr,
            pipes,
            accept,
        })
    }

    /// Closes every connection through the proxy; new ones are still accepted.
    /// Returns how many were open.
    pub fn cut(&self) -> usize {
        let pipes: Vec<_> = self
            .pipes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        let open = pipes.iter().filter(|p| !p.is_finished()).count() / 2;
        for p in pipes {
            p.abort();
        }
        open
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
