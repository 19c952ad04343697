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

/// The future a [`Resolver`] returns: the addresses to try, in order.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Vec<SocketAddr>>, DistError>> + Send + 'a>>;

/// Finds the addresses a node listens on (a host name may resolve to several;
/// they are tried in order). `Ok(None)`: this resolver does not know the node
/// (a [`ChainResolver`] then asks the next one); `Err`: it knows where to ask
/// but asking failed (for example, the EPMD there is down).
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `node` (`name@host`, already checked).
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a>;
}

/// Where an [`EpmdResolver`] asks.
#[derive(Debug, Clone)]
enum EpmdAt {
    /// One daemon, for every node.
    Addr(SocketAddr),
    /// The daemon at this port of each node's own host.
    HostPort(u16),
}

/// Asks an EPMD: either one daemon at a fixed address (the node's own, by
/// default), or the daemon on each node's own host at a port (Erlang's rule:
/// `name@host` is looked up at `host`'s EPMD port). A host name is resolved
/// with the system resolver and each of its addresses is tried.
#[derive(Debug, Clone)]
pub struct EpmdResolver {
    at: EpmdAt,
}

impl EpmdResolver {
    /// Looks every node up in the EPMD at `addr`.
    pub fn at(addr: SocketAddr) -> Self {
        EpmdResolver {
            at: EpmdAt::Addr(addr),
        }
    }

    /// Looks nodes up at port `port` of their own hosts.
    pub fn on_hosts(port: u16) -> Self {
        EpmdResolver {
            at: EpmdAt::HostPort(port),
        }
    }
}

impl Resolver for EpmdResolver {
    fn resolve<'a>(&'a self, node: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            let (short, host) = split_node_name(node)?;
            let daemons = match &self.at {
                EpmdAt::Addr(addr) => vec![*addr],
                EpmdAt::HostPort(port) => resolve_host(node, host, *port).await?,
            };
            let mut last_error = None;
            let mut info = None;
            for epmd_addr in daemons {
                let client = EpmdClient::new(epmd_addr);
                match client.lookup(short).await {
                    Ok(found) => {
                        info = Some((epmd_addr, found));
                        break;
                    }
                    Err(e) => {
                        // Erlang's own epmd answers only Erlang's requests.
                        if let Ok(reply) = client.port_please(short).await {
                            match reply {
                                Some(r) => {
                                    return Ok(Some(vec![SocketAddr::new(epmd_addr.ip(), r.port)]));
                                }
                                None => return Ok(None),
                            }
                        }
                        last_error = Some(DistError::Epmd {
                            addr: epmd_addr,
                            message: e.to_string(),
                        })
                    }
                }
            }
            let (epmd_addr, found) = match (info, last_error) {
                (Some(x), _) => x,
                (None, Some(e)) => return Err(e),
                (None, None) => return Ok(None),
            };
            let Some(info) = found else {
                return Ok(None);
            };
            // A registration names the host it listens on; empty means the
            // EPMD's own host.
            if info.host.is_empty() {
                return Ok(Some(vec![SocketAddr::new(epmd_addr.ip(), info.port)]));
            }
            Ok(Some(resolve_host(node, &info.host, info.port).await?))
        })
    }
}

/// Every address of `host` at `port`.
async fn resolve_host(node: &str, host: &str, port: u16) -> Result<Vec<SocketAddr>, DistError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let unreachable = |source: std::io::Error| DistError::Unreachable {
        node: node.to_string(),
        addr: format!("{host}:{port}"),
        source: Arc::new(source),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(unreachable)?
        .collect();
    if addrs.is_empty() {
        return Err(unreachable(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolves to no address",
        )));
    }
    Ok(addrs)
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
        let found = self.table.get(node).map(|a| vec![*a]);
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

    /// True if the chain has no resolver.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
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
        assert_eq!(chain.resolve("a@h").await.unwrap(), Some(vec![a]));
        assert_eq!(chain.resolve("b@h").await.unwrap(), Some(vec![b]));
        assert_eq!(chain.resolve("c@h").await.unwrap(), None);
    }
}
