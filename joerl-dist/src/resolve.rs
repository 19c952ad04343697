//! Where does node `name@host` listen? The [`Resolver`] seam and its
//! implementations: EPMD on the peer's own host (as Erlang does), a static
//! table, and a chain of them. Membership (the cluster layer) plugs in here as
//! one more resolver.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use joerl_epmd::EpmdClient;

use crate::error::DistError;
use crate::node::split_node_name;

/// The future a [`Resolver`] returns.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<SocketAddr>, DistError>> + Send + 'a>>;

/// Finds the address a node listens on. `Ok(None)`: this resolver does not
/// know the node (a [`ChainResolver`] then asks the next one); `Err`: it knows
/// where to ask but asking failed (for example, the EPMD there is down).
pub trait Resolver: Send + Sync + 'static {
    /// The address of `node` (`name@host`, already checked).
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a>;
}

/// Asks the EPMD on the node's own host, at `port` (Erlang's rule: `name@host`
/// is looked up at `host`'s EPMD port). The host part is resolved with the
/// system resolver.
#[derive(Debug, Clone)]
pub struct EpmdResolver {
    port: u16,
}

impl EpmdResolver {
    /// Looks nodes up at port `port` of their hosts.
    pub fn new(port: u16) -> Self {
        EpmdResolver { port }
    }

    /// The EPMD port asked on every host.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Resolver for EpmdResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let (short, host) = split_node_name(node)?;
            let epmd_addr = resolve_host(host, self.port).await?;
            let info = EpmdClient::new(epmd_addr)
                .lookup(short)
                .await
                .map_err(|e| DistError::Epmd {
                    addr: epmd_addr,
                    message: e.to_string(),
                })?;
            let Some(info) = info else {
                return Err(DistError::UnknownNode(node.to_string()));
            };
            // A registration names the host it listens on; empty means the
            // EPMD's own host.
            let listen_host = if info.host.is_empty() {
                host
            } else {
                info.host.as_str()
            };
            Ok(Some(resolve_host(listen_host, info.port).await?))
        })
    }
}

async fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, DistError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let unreachable = |source: std::io::Error| DistError::Unreachable {
        node: host.to_string(),
        addr: format!("{host}:{port}"),
        source: Arc::new(source),
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolves to no address",
            ))
        })
}

/// A fixed table of node addresses (no EPMD needed for those nodes).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<String, SocketAddr>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` (`name@host`) at `addr`.
    pub fn with(mut self, node: impl Into<String>, addr: SocketAddr) -> Self {
        self.table.insert(node.into(), addr);
        self
    }

    /// True if the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a> {
        let found = self.table.get(node).copied();
        Box::pin(async move { Ok(found) })
    }
}

/// Asks each resolver in turn; the first that knows the node answers.
#[derive(Clone, Default)]
pub struct ChainResolver {
    links: Vec<Arc<dyn Resolver>>,
}

impl ChainResolver {
    /// An empty chain (it knows no node).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `resolver`, asked after those already in the chain.
    pub fn then(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.links.push(resolver);
        self
    }
}

impl std::fmt::Debug for ChainResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainResolver({} resolvers)", self.links.len())
    }
}

impl Resolver for ChainResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            for link in &self.links {
                if let Some(addr) = link.resolve(node).await? {
                    return Ok(Some(addr));
                }
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_chain_asks_in_order_and_static_entries_need_no_epmd() {
        let a: SocketAddr = "127.0.0.1:1111".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let chain = ChainResolver::new()
            .then(Arc::new(StaticResolver::new().with("a@h", a)))
            .then(Arc::new(
                StaticResolver::new().with("a@h", b).with("b@h", b),
            ));
        assert_eq!(chain.resolve("a@h").await.unwrap(), Some(a));
        assert_eq!(chain.resolve("b@h").await.unwrap(), Some(b));
        assert_eq!(chain.resolve("c@h").await.unwrap(), None);
    }
}
