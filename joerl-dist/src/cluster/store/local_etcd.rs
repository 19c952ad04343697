//! A one-member etcd started as a child process, for development, tests
//! and benchmarks: the `etcd` binary (Debian's `etcd-server`) on free ports
//! of 127.0.0.1 with a data directory of its own, stopped by its PID when
//! the handle is stopped or dropped. Production clusters run their own etcd
//! and give its endpoints to [`EtcdOptions`](super::etcd::EtcdOptions).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why a local etcd did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    /// The `etcd` binary is not installed (Debian: `apt-get install
    /// etcd-server`), or could not be run.
    #[error("cannot run {program:?} (install etcd, e.g. Debian's etcd-server): {source}")]
    NoBinary {
        /// The program tried.
        program: String,
        /// Why it did not run.
        #[source]
        source: std::io::Error,
    },
    /// A free port or the data directory could not be had.
    #[error("cannot prepare a local etcd: {0}")]
    Setup(#[source] std::io::Error),
    /// etcd exited before it answered.
    #[error("etcd exited at start ({status}); its log: {log}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// etcd did not answer on its client port in time.
    #[error("etcd did not answer on {addr} within {waited:?}")]
    NotReady {
        /// Its client address.
        addr: SocketAddr,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// TLS for a local etcd's client port (PEM text), e.g. from
/// [`generate_certs`](crate::transport::generate_certs).
#[derive(Debug, Clone)]
pub struct LocalEtcdTls {
    /// The CA that signed both certificates.
    pub ca_pem: String,
    /// etcd's certificate and key (valid for 127.0.0.1).
    pub server: (String, String),
    /// The client certificate and key etcd requires
    /// (`--client-cert-auth`), used by the readiness probe too.
    pub client: (String, String),
}

/// A running local etcd.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<Child>,
    tls: Option<LocalEtcdTls>,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    owns_dir: bool,
}

/// A free port of 127.0.0.1, checked by binding it (and released for etcd).
fn free_port() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

impl LocalEtcd {
    /// Starts `etcd` (from `PATH`) on free ports with a new data directory
    /// under the system's temporary directory, and waits (up to 30 s) until
    /// it answers.
    pub async fn start() -> Result<LocalEtcd, LocalEtcdError> {
        Self::start_fresh(None).await
    }

    /// [`LocalEtcd::start`] with TLS on the client port: `https`, and a
    /// client certificate signed by `tls.ca_pem` required of every client.
    pub async fn start_tls(tls: LocalEtcdTls) -> Result<LocalEtcd, LocalEtcdError> {
        Self::start_fresh(Some(tls)).await
    }

    /// On free ports, in a new directory it removes when dropped.
    async fn start_fresh(tls: Option<LocalEtcdTls>) -> Result<LocalEtcd, LocalEtcdError> {
        let dir = std::env::temp_dir().join(format!(
            "joerl-etcd-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).map_err(LocalEtcdError::Setup)?;
        let client = free_port().map_err(LocalEtcdError::Setup)?;
        let peer = free_port().map_err(LocalEtcdError::Setup)?;
        let mut e = Self::spawn(&dir, client, peer, tls).await?;
        e.owns_dir = true;
        Ok(e)
    }

    /// The TLS options a client of this etcd needs (its CA and the client
    /// certificate), if it runs with TLS.
    pub fn client_tls(&self) -> Option<super::etcd::EtcdTls> {
        self.tls.as_ref().map(|t| super::etcd::EtcdTls {
            ca_pem: t.ca_pem.clone().into_bytes(),
            identity: Some((
                t.client.0.clone().into_bytes(),
                t.client.1.clone().into_bytes(),
            )),
            domain: None,
        })
    }

    /// Starts `etcd` with its data in `dir` (kept when stopped, so a
    /// restart with the same `dir` finds the same data), on new free ports.
    pub async fn start_in(dir: &Path) -> Result<LocalEtcd, LocalEtcdError> {
        let client = free_port().map_err(LocalEtcdError::Setup)?;
        let peer = free_port().map_err(LocalEtcdError::Setup)?;
        Self::start_at(dir, client, peer).await
    }

    /// Starts `etcd` with its data in `dir` on the given client and peer
    /// addresses (a restart on the same address, as clients that keep
    /// their endpoints need).
    pub async fn start_at(
        dir: &Path,
        client: SocketAddr,
        peer: SocketAddr,
    ) -> Result<LocalEtcd, LocalEtcdError> {
        Self::spawn(dir, client, peer, None).await
    }

    async fn spawn(
        dir: &Path,
        client: SocketAddr,
        peer: SocketAddr,
        tls: Option<LocalEtcdTls>,
    ) -> Result<LocalEtcd, LocalEtcdError> {
        let program = std::env::var("JOERL_ETCD").unwrap_or_else(|_| "etcd".to_string());
        let data_dir = dir.join("data");
        let log = dir.join("etcd.log");
        let log_file = std::fs::File::create(&log).map_err(LocalEtcdError::Setup)?;
        let log_err = log_file.try_clone().map_err(LocalEtcdError::Setup)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://{client}");
        let peer_url = format!("http://{peer}");
        let mut cmd = Command::new(&program);
        if let Some(t) = &tls {
            let write = |name: &str, text: &str| -> Result<PathBuf, LocalEtcdError> {
                let p = dir.join(name);
                std::fs::write(&p, text).map_err(LocalEtcdError::Setup)?;
                Ok(p)
            };
            cmd.arg("--cert-file")
                .arg(write("server.pem", &t.server.0)?)
                .arg("--key-file")
                .arg(write("server.key", &t.server.1)?)
                .arg("--trusted-ca-file")
                .arg(write("ca.pem", &t.ca_pem)?)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name")
            .arg("joerl")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("joerl={peer_url}"))
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| LocalEtcdError::NoBinary {
                program: program.clone(),
                source,
            })?;
        let mut e = LocalEtcd {
            child: Some(child),
            tls,
            client,
            peer,
            data_dir,
            log,
            owns_dir: false,
        };
        e.wait_ready(Duration::from_secs(30)).await?;
        Ok(e)
    }

    /// Waits until etcd answers a read on its client port.
    async fn wait_ready(&mut self, waited: Duration) -> Result<(), LocalEtcdError> {
        use super::MetadataStore;
        let deadline = tokio::time::Instant::now() + waited;
        let mut options = super::etcd::EtcdOptions::new([self.endpoint()]);
        options.tls = self.client_tls();
        options.connect_timeout = Duration::from_secs(1);
        options.request_timeout = Duration::from_secs(1);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(LocalEtcdError::Exited {
                    status,
                    log: self.log_tail(),
                });
            }
            if let Ok(store) = super::etcd::EtcdStore::connect(options.clone()).await
                && store.get("joerl-ready-probe").await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalEtcdError::NotReady {
                    addr: self.client,
                    waited,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client URL (`http://127.0.0.1:PORT`, `https://..` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The peer address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The directory holding its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The last 2,000 bytes of its log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read(&self.log).unwrap_or_default();
        let from = s.len().saturating_sub(2000);
        String::from_utf8_lossy(&s[from..]).into_owned()
    }

    /// Stops it (SIGKILL by its PID) and waits for it to exit; the data
    /// directory stays (see [`LocalEtcd::start_at`]) unless
    /// [`LocalEtcd::start`] made it, in which case it goes when the handle
    /// is dropped.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
        if self.owns_dir
            && let Some(dir) = self.data_dir.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
