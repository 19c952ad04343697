//! A command line for a node's management API (its HTTP JSON routes, see
//! `joerl_dist::cluster::management::http`):
//!
//! ```text
//! cargo run -p joerl-examples --example cluster_admin -- --addr 127.0.0.1:8558 nodes
//! cluster_admin --addr ADDR nodes | actors | health | metrics
//! cluster_admin --addr ADDR [--cookie C] migrate KIND ID NODE | drain NODE | undrain NODE | elect
//! ```
//!
//! Mutating commands send the token derived from the cookie (`--cookie`,
//! else `JOERL_COOKIE`); the node must allow them. It prints the answer's
//! body and exits non-zero on an error status.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use joerl_dist::cluster::management::http;

#[derive(Parser, Debug)]
#[command(about = "Calls a joerl node's management API")]
struct Args {
    /// The management listener's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The cluster's cookie (for the token of mutating commands; default:
    /// JOERL_COOKIE).
    #[arg(long)]
    cookie: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every member, its state, whether it is drained or leads.
    Nodes,
    /// Every activation in the cluster.
    Actors,
    /// The cluster's health as the node sees it.
    Health,
    /// The Prometheus text.
    Metrics,
    /// Moves one identity to a member.
    Migrate {
        /// The kind's registered name.
        kind: String,
        /// The id.
        id: String,
        /// The member to move it to.
        node: String,
    },
    /// Moves every identity off a member and places nothing new on it.
    Drain {
        /// The member.
        node: String,
    },
    /// Places on a drained member again.
    Undrain {
        /// The member.
        node: String,
    },
    /// Starts a new leader term.
    Elect,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let token = || -> Result<String> {
        let cookie = match &args.cookie {
            Some(c) => c.clone(),
            None => std::env::var("JOERL_COOKIE")
                .context("mutating commands need --cookie or JOERL_COOKIE")?,
        };
        Ok(http::token(&cookie))
    };
    let (method, path, body, token) = match &args.command {
        Command::Nodes => ("GET", "/cluster/nodes".to_string(), None, None),
        Command::Actors => ("GET", "/cluster/actors".to_string(), None, None),
        Command::Health => ("GET", "/cluster/health".to_string(), None, None),
        Command::Metrics => ("GET", "/metrics".to_string(), None, None),
        Command::Migrate { kind, id, node } => (
            "POST",
            format!("/cluster/actors/{kind}/{id}/migrate"),
            Some(serde_json::json!({ "node": node }).to_string()),
            Some(token()?),
        ),
        Command::Drain { node } => (
            "POST",
            format!("/cluster/nodes/{node}/drain"),
            None,
            Some(token()?),
        ),
        Command::Undrain { node } => (
            "POST",
            format!("/cluster/nodes/{node}/undrain"),
            None,
            Some(token()?),
        ),
        Command::Elect => (
            "POST",
            "/cluster/leader/elect".to_string(),
            None,
            Some(token()?),
        ),
    };
    let reply = http::request(
        args.addr,
        method,
        &path,
        token.as_deref(),
        body,
        Duration::from_secs(args.timeout),
    )
    .await
    .with_context(|| format!("{method} {path} on {}", args.addr))?;
    println!("{}", reply.body);
    if reply.status >= 400 {
        bail!("{method} {path}: HTTP {}", reply.status);
    }
    Ok(())
}
