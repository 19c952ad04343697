//! Helpers shared by the joerl examples: logging, Ctrl-C, and the message types
//! several examples exchange.
#![warn(missing_docs)]

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

impl joerl_dist::gen_server::GenServer for Service {
    type Call = Request;
    type Reply = Reply;
    type Cast = ();

    async fn handle_call(
        &mut self,
        request: Request,
        _from: joerl_dist::gen_server::ReplyTo,
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
