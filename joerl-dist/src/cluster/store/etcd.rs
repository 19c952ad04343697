//! [`MetadataStore`] on etcd (v3 API, through the `etcd-client` crate).
//!
//! One [`EtcdStore`] per node holds one client: a gRPC channel balanced over
//! every endpoint given (a connection pool the node shares; clones of the
//! store share it too). TLS to etcd is optional ([`EtcdTls`]: the CA, and a
//! client certificate if the cluster asks for one). Locks and elections use
//! etcd's own `v3lock` and `v3election` services, which etcd 3.4 and later
//! serve on the client port.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaderKey, LockOptions,
    ProclaimOptions, PutOptions, ResignOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::{
    CasOutcome, Entry, Expect, LeaderInfo, LeaderTerm, LeaseId, LockKey, MetadataStore, Revision,
    StoreError, StoreFuture, WATCH_BUFFER, Watch, WatchEvent,
};

/// TLS to etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates (PEM).
    pub ca_pem: Vec<u8>,
    /// This client's certificate and key (PEM), if etcd asks for client
    /// certificates (`--client-cert-auth`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the members' certificates are checked against (default:
    /// the endpoint's host).
    pub domain: Option<String>,
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The members' client URLs (`http://127.0.0.1:2379`, or `https://..`
    /// with [`EtcdOptions::tls`]); calls are balanced over them.
    pub endpoints: Vec<String>,
    /// TLS, if the endpoints are `https`.
    pub tls: Option<EtcdTls>,
    /// How long a connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long a call may take (default 5 s); locks and campaigns, which
    /// wait for their turn, are not bounded by it.
    pub request_timeout: Duration,
    /// A user and password, if etcd has authentication on.
    pub user: Option<(String, String)>,
}

impl EtcdOptions {
    /// The options a cluster configuration asks for: `Some` with its
    /// `etcd_endpoints` if its `metadata_store` is `etcd`, else `None`.
    pub fn from_config(config: &crate::cluster::ClusterConfig) -> Option<EtcdOptions> {
        (config.metadata_store == crate::cluster::MetadataStoreKind::Etcd)
            .then(|| EtcdOptions::new(config.etcd_endpoints.iter().cloned()))
    }

    /// Options for `endpoints` with the defaults.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            user: None,
        }
    }
}

/// The etcd metadata store.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// A client of the etcd cluster at `options.endpoints`. Fails with
    /// [`StoreError::Refused`] for bad options (no endpoint, a bad URL,
    /// bad TLS material); connections are made as calls need them, so an
    /// etcd that is down now makes calls fail with
    /// [`StoreError::Unavailable`], not this.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Refused(
                "no etcd endpoint given (etcd_endpoints)".into(),
            ));
        }
        let endpoints = options.endpoints.join(",");
        // No per-request timeout on the channel: it would cut campaigns and
        // locks that wait their turn, and watches, after it (a waiting
        // campaign then went to the back of the queue again every time).
        // Bounded calls get it from `call` instead.
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &options.tls {
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(tls.ca_pem.clone()));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert.clone(), key.clone()));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            connect = connect.with_tls(t);
        }
        let client = tokio::time::timeout(
            options.connect_timeout + Duration::from_secs(1),
            Client::connect(options.endpoints.clone(), Some(connect)),
        )
        .await
        .map_err(|_| StoreError::Timeout(options.connect_timeout))?
        .map_err(|e| map_error(&endpoints, None, e))?;
        Ok(EtcdStore {
            client,
            endpoints,
            timeout: options.request_timeout,
        })
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Runs a bounded call on a clone of the client.
    async fn call<T, F, Fut>(&self, lease: Option<LeaseId>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.timeout, f(self.client.clone())).await {
            Ok(r) => r.map_err(|e| map_error(&self.endpoints, lease, e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// An unbounded call (locks and campaigns wait for their turn).
    async fn wait<T, F, Fut>(&self, lease: Option<LeaseId>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        f(self.client.clone())
            .await
            .map_err(|e| map_error(&self.endpoints, lease, e))
    }
}

/// A typed error from the client's, keeping its cause.
fn map_error(endpoints: &str, lease: Option<LeaseId>, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(status) => {
            let message = status.message().to_string();
            match status.code() {
                Code::NotFound if message.contains("lease") => {
                    StoreError::LeaseGone(lease.unwrap_or(LeaseId(0)))
                }
                // etcd's lock and election services answer their own
                // errors ("election: no leader", "election: not leader",
                // "election: session expired") as `Unknown`.
                Code::Unknown if message.starts_with("election:") => StoreError::Refused(message),
                Code::Unavailable | Code::Unknown | Code::Aborted | Code::Cancelled => {
                    StoreError::Unavailable {
                        endpoints: endpoints.to_string(),
                        source: Box::new(status),
                    }
                }
                Code::DeadlineExceeded => StoreError::Timeout(Duration::ZERO),
                _ => StoreError::Refused(format!("{:?}: {message}", status.code())),
            }
        }
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => StoreError::Unavailable {
            endpoints: endpoints.to_string(),
            source: Box::new(e),
        },
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => {
            StoreError::Refused(e.to_string())
        }
        E::LeaseKeepAliveError(m) if m.contains("not found") => {
            StoreError::LeaseGone(lease.unwrap_or(LeaseId(0)))
        }
        other => StoreError::Protocol(other.to_string()),
    }
}

/// An [`Entry`] from etcd's key-value.
fn entry(kv: &etcd_client::KeyValue) -> Result<Entry, StoreError> {
    let key = std::str::from_utf8(kv.key()).map_err(|e| StoreError::Malformed {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: format!("the key is not UTF-8 ({e})"),
    })?;
    Ok(Entry {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l.0))
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Protocol("an answer without a header".into()))
}

impl MetadataStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let resp = self
                .call(None, |mut c| async move { c.get(key, None).await })
                .await?;
            resp.kvs().first().map(entry).transpose()
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Revision> {
        Box::pin(async move {
            let resp = self
                .call(lease, |mut c| async move {
                    c.put(key, value, put_options(lease)).await
                })
                .await?;
            revision_of(resp.header())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let resp = self
                .call(None, |mut c| async move { c.delete(key, None).await })
                .await?;
            Ok(resp.deleted() > 0)
        })
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            let compare = match expect {
                Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
                Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value, put_options(lease))])
                .or_else([TxnOp::get(key, None)]);
            let resp = self
                .call(lease, |mut c| async move { c.txn(txn).await })
                .await?;
            if resp.succeeded() {
                return Ok(CasOutcome::Swapped {
                    revision: revision_of(resp.header())?,
                });
            }
            let current = match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(entry).transpose()?,
                _ => {
                    return Err(StoreError::Protocol(
                        "a failed transaction without its read".into(),
                    ));
                }
            };
            Ok(CasOutcome::Conflict { current })
        })
    }

    fn create_many<'a>(
        &'a self,
        items: &'a [(String, Vec<u8>)],
        lease: Option<LeaseId>,
    ) -> StoreFuture<'a, Vec<CasOutcome>> {
        Box::pin(async move {
            super::check_batch(items)?;
            if items.is_empty() {
                return Ok(Vec::new());
            }
            // One transaction: if none of the keys exists, all are
            // created; else its other branch reads them all, the taken
            // ones are reported, and the rest go again (each key's create
            // stays create-if-absent). Nested transactions would say it in
            // one round, but etcd counts their operations toward
            // `--max-txn-ops` too (128 nested creates are refused).
            let mut outcomes: Vec<Option<CasOutcome>> = vec![None; items.len()];
            let mut pending: Vec<usize> = (0..items.len()).collect();
            for _round in 0..4 {
                if pending.is_empty() {
                    break;
                }
                let key = |i: &usize| items[*i].0.as_str();
                let txn = Txn::new()
                    .when(
                        pending
                            .iter()
                            .map(|i| Compare::create_revision(key(i), CompareOp::Equal, 0))
                            .collect::<Vec<_>>(),
                    )
                    .and_then(
                        pending
                            .iter()
                            .map(|i| TxnOp::put(key(i), items[*i].1.clone(), put_options(lease)))
                            .collect::<Vec<_>>(),
                    )
                    .or_else(
                        pending
                            .iter()
                            .map(|i| TxnOp::get(key(i), None))
                            .collect::<Vec<_>>(),
                    );
                let resp = self
                    .call(lease, |mut c| async move { c.txn(txn).await })
                    .await?;
                if resp.succeeded() {
                    let revision = revision_of(resp.header())?;
                    for i in pending.drain(..) {
                        outcomes[i] = Some(CasOutcome::Swapped { revision });
                    }
                    break;
                }
                let answers = resp.op_responses();
                if answers.len() != pending.len() {
                    return Err(StoreError::Protocol(format!(
                        "{} reads for {} keys",
                        answers.len(),
                        pending.len()
                    )));
                }
                let mut still = Vec::new();
                for (i, a) in pending.iter().zip(answers) {
                    let TxnOpResponse::Get(g) = a else {
                        return Err(StoreError::Protocol("a read answered out of shape".into()));
                    };
                    match g.kvs().first() {
                        Some(kv) => {
                            outcomes[*i] = Some(CasOutcome::Conflict {
                                current: Some(entry(kv)?),
                            })
                        }
                        None => still.push(*i),
                    }
                }
                pending = still;
            }
            outcomes
                .into_iter()
                .map(|o| {
                    o.ok_or_else(|| {
                        StoreError::Protocol(
                            "keys kept being created and deleted under a batch of creates".into(),
                        )
                    })
                })
                .collect()
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<Entry>, Revision)> {
        Box::pin(async move {
            let resp = self
                .call(None, |mut c| async move {
                    c.get(prefix, Some(GetOptions::new().with_prefix())).await
                })
                .await?;
            let revision = revision_of(resp.header())?;
            let mut out = Vec::with_capacity(resp.kvs().len());
            for kv in resp.kvs() {
                match entry(kv) {
                    Ok(e) => out.push(e),
                    Err(error) => {
                        tracing::warn!(%error, prefix, "metadata store: entry skipped")
                    }
                }
            }
            Ok((out, revision))
        })
    }

    fn grant_lease(&self, ttl: Duration) -> StoreFuture<'_, LeaseId> {
        Box::pin(async move {
            let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
            let resp = self
                .call(None, |mut c| async move { c.lease_grant(secs, None).await })
                .await?;
            Ok(LeaseId(resp.id()))
        })
    }

    fn keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, Duration> {
        Box::pin(async move {
            let resp = self
                .call(Some(lease), |mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                })
                .await?;
            match resp {
                Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl().unsigned_abs())),
                Some(_) => Err(StoreError::LeaseGone(lease)),
                None => Err(StoreError::Unavailable {
                    endpoints: self.endpoints.clone(),
                    source: "the keep-alive stream ended without an answer".into(),
                }),
            }
        })
    }

    fn revoke_lease(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.call(
                Some(lease),
                |mut c| async move { c.lease_revoke(lease.0).await },
            )
            .await?;
            Ok(())
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Option<Revision>) -> StoreFuture<'a, Watch> {
        Box::pin(async move {
            let mut options = WatchOptions::new().with_prefix();
            if let Some(r) = after {
                options = options.with_start_revision(r + 1);
            }
            let mut stream = self
                .call(
                    None,
                    |mut c| async move { c.watch(prefix, Some(options)).await },
                )
                .await?;
            let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
            let endpoints = self.endpoints.clone();
            let requested = after.map_or(0, |r| r + 1);
            let task = tokio::spawn(async move {
                // A full buffer: the reader gets what is buffered, then
                // the error (in order), and the watch ends.
                let push = |tx: &tokio::sync::mpsc::Sender<_>, item| match tx.try_send(item) {
                    Ok(()) => Ok(()),
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Err(true),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(false),
                };
                loop {
                    let resp = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            let _ = tx
                                .send(Err(StoreError::Unavailable {
                                    endpoints,
                                    source: "the watch stream ended".into(),
                                }))
                                .await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(map_error(&endpoints, None, e))).await;
                            return;
                        }
                    };
                    if resp.canceled() {
                        let error = if resp.compact_revision() > 0 {
                            StoreError::Compacted {
                                requested,
                                compacted: resp.compact_revision(),
                            }
                        } else {
                            StoreError::Protocol(format!(
                                "the watch was cancelled: {}",
                                resp.cancel_reason()
                            ))
                        };
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let item = match ev.event_type() {
                            etcd_client::EventType::Put => entry(kv).map(WatchEvent::Put),
                            etcd_client::EventType::Delete => Ok(WatchEvent::Deleted {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                revision: kv.mod_revision(),
                            }),
                        };
                        let item = match item {
                            Ok(i) => i,
                            Err(error) => {
                                tracing::warn!(%error, "metadata store: watch event skipped");
                                continue;
                            }
                        };
                        match push(&tx, Ok(item)) {
                            Ok(()) => {}
                            Err(true) => {
                                let _ = tx.send(Err(StoreError::WatchLagged)).await;
                                return;
                            }
                            Err(false) => return,
                        }
                    }
                }
            });
            Ok(Watch::new(rx, task))
        })
    }

    fn lock<'a>(&'a self, name: &'a str, lease: LeaseId) -> StoreFuture<'a, LockKey> {
        Box::pin(async move {
            let resp = self
                .wait(Some(lease), |mut c| async move {
                    c.lock(name, Some(LockOptions::new().with_lease(lease.0)))
                        .await
                })
                .await?;
            let key = String::from_utf8(resp.key().to_vec())
                .map_err(|e| StoreError::Protocol(format!("a lock key that is not UTF-8: {e}")))?;
            Ok(LockKey { key, lease })
        })
    }

    fn unlock<'a>(&'a self, lock: &'a LockKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.call(Some(lock.lease), |mut c| async move {
                c.unlock(lock.key.as_bytes()).await
            })
            .await?;
            Ok(())
        })
    }

    fn campaign<'a>(
        &'a self,
        name: &'a str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> StoreFuture<'a, LeaderTerm> {
        Box::pin(async move {
            let resp = self
                .wait(Some(lease), |mut c| async move {
                    c.campaign(name, value, lease.0).await
                })
                .await?;
            let leader = resp.leader().ok_or_else(|| {
                StoreError::Protocol("a campaign won without a leader key".into())
            })?;
            let key = String::from_utf8(leader.key().to_vec()).map_err(|e| {
                StoreError::Protocol(format!("an election key that is not UTF-8: {e}"))
            })?;
            Ok(LeaderTerm {
                election: name.to_string(),
                key,
                revision: leader.rev(),
                lease,
            })
        })
    }

    fn proclaim<'a>(&'a self, term: &'a LeaderTerm, value: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let options = ProclaimOptions::new().with_leader(leader_key(term));
            self.call(Some(term.lease), |mut c| async move {
                c.proclaim(value, Some(options)).await
            })
            .await?;
            Ok(())
        })
    }

    fn leader<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<LeaderInfo>> {
        Box::pin(async move {
            match self
                .call(None, |mut c| async move { c.leader(name).await })
                .await
            {
                Ok(resp) => Ok(resp.kv().map(|kv| LeaderInfo {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: kv.value().to_vec(),
                    revision: kv.create_revision(),
                    lease: LeaseId(kv.lease()),
                })),
                // etcd answers "election: no leader" as an error.
                Err(StoreError::Refused(m)) if m.contains("no leader") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn resign<'a>(&'a self, term: &'a LeaderTerm) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let options = ResignOptions::new().with_leader(leader_key(term));
            self.call(Some(term.lease), |mut c| async move {
                c.resign(Some(options)).await
            })
            .await?;
            Ok(())
        })
    }
}

fn leader_key(term: &LeaderTerm) -> LeaderKey {
    LeaderKey::new()
        .with_name(term.election.as_bytes())
        .with_key(term.key.as_bytes())
        .with_rev(term.revision)
        .with_lease(term.lease.0)
}
