//! Name resolution for listening and connecting (QEMU's `QIODNSResolver`).
//!
//! A [`Resolver`] turns the host of a [`SocketAddress::Inet`] into every
//! numeric address it stands for, so a listener can bind all of them and a
//! connector can try each in turn.
//!
//! # Rules
//!
//! * **Numeric hosts** (`127.0.0.1`, `::1`, `[::1]`) are returned as they
//!   are, without any lookup.
//! * **Empty host** (`tcp::4444`): for listening ([`Resolver::lookup_sync`],
//!   QEMU's `AI_PASSIVE`) it is the wildcard of *both* families, `0.0.0.0`
//!   and `::`; for connecting ([`Resolver::lookup_connect`]) it is an error.
//! * **Hosts file first**: the hosts file (`/etc/hosts` unless
//!   [`ResolverOptions::hosts_file`] says otherwise) is read on every lookup
//!   of a name, so edits are seen at once, as with glibc. A name found there
//!   is answered from the file alone, for both families, without asking DNS
//!   (glibc's `hosts: files dns` order); this keeps hosts-only names fast on
//!   machines whose DNS server is unreachable.
//! * **localhost** and `*.localhost` never reach DNS (RFC 6761 §6.3): the
//!   hosts-file entries are used, and a family the file has no entry for
//!   gets its loopback address (`127.0.0.1` or `::1`). So `tcp:localhost:N`
//!   listens on IPv4 *and* IPv6 loopback even where `/etc/hosts` lists only
//!   `127.0.0.1`.
//! * **Other names** go to DNS through hickory-resolver (system
//!   `/etc/resolv.conf` unless [`ResolverOptions::name_servers`] is set),
//!   asking for A and AAAA records together. Special-use names such as
//!   `*.invalid` are answered "no such host" by hickory without any traffic.
//! * **Order**: every address is returned once, IPv4 addresses first and
//!   IPv6 second, each family in the order the hosts file or the DNS answer
//!   gave it. The order is stable across calls with the same answer.
//! * **Bounded time**: one DNS lookup (including retries and search-list
//!   expansion) is cut off after [`ResolverOptions::timeout`] (5 s by
//!   default) and fails with `TimedOut`, so a machine without a reachable
//!   DNS server gets a clear error instead of a hang.
//! * UNIX, abstract, vsock and fd addresses are returned unchanged, as the
//!   only entry.
//!
//! # Runtime
//!
//! hickory-resolver is asynchronous and needs a tokio runtime. Each
//! [`Resolver`] lazily creates one *current-thread* runtime the first time it
//! really needs DNS (numeric, hosts-file and localhost answers never create
//! it) and keeps it, together with the hickory resolver, for its lifetime:
//! hickory's answer cache and name-server connection state live in tasks on
//! that runtime, so a runtime per call would throw the cache away on every
//! lookup. A current-thread runtime costs no thread of its own; tokio lets
//! several threads call `block_on` on it at once (one drives the I/O driver,
//! the others hook in), so concurrent lookups from many threads work. A
//! lookup made from inside some other tokio runtime is run on a short-lived
//! helper thread, because tokio forbids nested `block_on`.
//!
//! # Errors
//!
//! Failures are [`Error::Os`] whose operation names the host, for example
//! `dns-resolver: resolve host "foo.invalid" failed: no such host`. The
//! `io::ErrorKind` says why: `NotFound` (no such host or no address),
//! `TimedOut` (no answer in time), `InvalidInput` (not a valid host name).
//! An empty host for connecting is [`Error::Address`].
//!
//! # Example
//!
//! ```
//! use transit_channel::dns::Resolver;
//! use transit_channel::SocketAddress;
//!
//! // Listening on the wildcard means both families.
//! let addrs = Resolver::global().lookup_sync(&"tcp::4444".parse()?)?;
//! assert_eq!(
//!     addrs,
//!     [
//!         SocketAddress::Inet { host: "0.0.0.0".into(), port: 4444 },
//!         SocketAddress::Inet { host: "::".into(), port: 4444 },
//!     ]
//! );
//!
//! // Numeric hosts are returned without a lookup.
//! let to = Resolver::global().lookup_connect("::1", 22)?;
//! assert_eq!(to, ["[::1]:22".parse().unwrap()]);
//! # Ok::<(), transit_channel::Error>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Hosts, ResolveError, TokioResolver};

use crate::address::SocketAddress;
use crate::error::{Error, Result};
use crate::main_loop::MainContext;
use crate::task::{Task, TaskHandle};

/// The name a resolver uses in its errors unless told otherwise.
const DEFAULT_NAME: &str = "dns-resolver";

/// The system hosts file.
const SYSTEM_HOSTS_FILE: &str = "/etc/hosts";

/// How a [`Resolver`] finds names. Start from [`ResolverOptions::default`]
/// (the system configuration) and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResolverOptions {
    /// Name used in error messages (default `dns-resolver`).
    pub name: String,
    /// The hosts file read before DNS (default `/etc/hosts`). A missing file
    /// counts as empty.
    pub hosts_file: PathBuf,
    /// DNS servers to ask over UDP (then TCP); `None` (the default) uses
    /// `/etc/resolv.conf`.
    pub name_servers: Option<Vec<SocketAddr>>,
    /// The longest one DNS lookup may take, retries included (default 5 s).
    pub timeout: Duration,
}

impl Default for ResolverOptions {
    fn default() -> ResolverOptions {
        ResolverOptions {
            name: DEFAULT_NAME.to_owned(),
            hosts_file: PathBuf::from(SYSTEM_HOSTS_FILE),
            name_servers: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Resolves host names to addresses; see the [module docs](self).
///
/// Cheap to clone (the clones share the cache and runtime), `Send + Sync`.
#[derive(Clone)]
#[doc(alias = "QIODNSResolver")]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ResolverOptions,
    /// The DNS half, created on first use. A failed creation is not cached,
    /// so a later lookup tries again (for example once resolv.conf exists).
    dns: Mutex<Option<Arc<Dns>>>,
}

/// hickory's resolver and the runtime its tasks live on.
struct Dns {
    runtime: Option<tokio::runtime::Runtime>,
    resolver: TokioResolver,
}

impl Drop for Dns {
    fn drop(&mut self) {
        // `Runtime::drop` panics when run inside another runtime's async
        // context; shutting down in the background never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new()
    }
}

impl Resolver {
    /// A resolver with the system configuration. Nothing is read until the
    /// first lookup.
    pub fn new() -> Resolver {
        Resolver::with_options(ResolverOptions::default())
    }

    /// A resolver with `opts`.
    pub fn with_options(opts: ResolverOptions) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                opts,
                dns: Mutex::new(None),
            }),
        }
    }

    /// The process-wide resolver with the system configuration (QEMU's
    /// `qio_dns_resolver_get_instance`).
    #[doc(alias = "qio_dns_resolver_get_instance")]
    pub fn global() -> &'static Resolver {
        static GLOBAL: OnceLock<Resolver> = OnceLock::new();
        GLOBAL.get_or_init(Resolver::new)
    }

    /// The options this resolver was made with.
    pub fn options(&self) -> &ResolverOptions {
        &self.inner.opts
    }

    /// Resolve `addr` for *listening*: an inet address becomes one numeric
    /// [`SocketAddress::Inet`] per address of its host (an empty host is
    /// `0.0.0.0` and `::`), with the same port; other kinds come back
    /// unchanged. Blocks for at most [`ResolverOptions::timeout`].
    #[doc(alias = "qio_dns_resolver_lookup_sync")]
    pub fn lookup_sync(&self, addr: &SocketAddress) -> Result<Vec<SocketAddress>> {
        match addr {
            SocketAddress::Inet { host, port } => {
                let ips = if host.is_empty() {
                    vec![
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    ]
                } else {
                    self.lookup_host(host)?
                };
                Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddress::Inet {
                        host: ip.to_string(),
                        port: *port,
                    })
                    .collect())
            }
            other => Ok(vec![other.clone()]),
        }
    }

    /// Resolve `host` for *connecting*: every address, IPv4 first, each
    /// with `port`. An empty host is an [`Error::Address`].
    pub fn lookup_connect(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        if host.is_empty() {
            return Err(Error::Address {
                input: format!(":{port}"),
                expected: "a host name or address to connect to (the host is empty)".into(),
            });
        }
        Ok(self
            .lookup_host(host)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Every address of a non-empty `host` (numeric, hosts file,
    /// localhost, then DNS), deduplicated, IPv4 first.
    pub fn lookup_host(&self, host: &str) -> Result<Vec<IpAddr>> {
        let host = host.trim();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = IpAddr::from_str(bare) {
            return Ok(vec![ip]);
        }
        if host.is_empty() {
            return Err(self.error(host, io::ErrorKind::InvalidInput, "the host is empty"));
        }
        let name = Name::from_str(&host.to_ascii_lowercase()).map_err(|e| {
            self.error(
                host,
                io::ErrorKind::InvalidInput,
                format!("not a valid host name: {e}"),
            )
        })?;

        let mut ips = self.hosts_file_lookup(&name);
        if is_localhost(&name) {
            if !ips.iter().any(IpAddr::is_ipv4) {
                ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            if !ips.iter().any(IpAddr::is_ipv6) {
                ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            }
        }
        if ips.is_empty() {
            ips = self.dns_lookup(host, name)?;
        }
        Ok(ordered(ips))
    }

    /// Run [`lookup_sync`](Self::lookup_sync) on a worker thread; `done`
    /// gets the result on `ctx`'s thread (QEMU's
    /// `qio_dns_resolver_lookup_async`).
    #[doc(alias = "qio_dns_resolver_lookup_async")]
    pub fn lookup_task(
        &self,
        ctx: &MainContext,
        addr: SocketAddress,
        done: impl FnOnce(Result<Vec<SocketAddress>>) + 'static,
    ) -> TaskHandle {
        let resolver = self.clone();
        Task::run_in_thread(
            ctx,
            "dns-resolver",
            move |_errors| resolver.lookup_sync(&addr),
            done,
        )
    }

    /// A/AAAA entries of `name` in the hosts file; empty if it has none or
    /// the file cannot be read.
    fn hosts_file_lookup(&self, name: &Name) -> Vec<IpAddr> {
        let Ok(file) = File::open(&self.inner.opts.hosts_file) else {
            return Vec::new();
        };
        let mut hosts = Hosts::default();
        // A read error half-way leaves the entries read so far, which is
        // what a resolver reading line by line would use too.
        let _ = hosts.read_hosts_conf(file);
        let mut ips = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(lookup) = hosts.lookup_static_host(&Query::query(name.clone(), rtype)) {
                ips.extend(lookup.iter().filter_map(|rdata| rdata.ip_addr()));
            }
        }
        ips
    }

    /// Ask DNS for A and AAAA records of `name`, bounded by the timeout.
    fn dns_lookup(&self, host: &str, name: Name) -> Result<Vec<IpAddr>> {
        let dns = self.dns(host)?;
        let timeout = self.inner.opts.timeout;
        let query = async { tokio::time::timeout(timeout, dns.resolver.lookup_ip(name)).await };
        let Some(runtime) = dns.runtime.as_ref() else {
            return Err(self.error(host, io::ErrorKind::Other, "the resolver is shut down"));
        };
        let outcome = if tokio::runtime::Handle::try_current().is_ok() {
            // Inside someone's tokio runtime `block_on` would panic: run the
            // lookup on a helper thread and wait for it.
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("dns-resolver".into())
                    .spawn_scoped(s, || runtime.block_on(query))
                    .map_err(|e| {
                        self.error(host, e.kind(), format!("start a resolver thread: {e}"))
                    })?
                    .join()
                    .map_err(|_| {
                        self.error(host, io::ErrorKind::Other, "the resolver thread panicked")
                    })
            })?
        } else {
            runtime.block_on(query)
        };
        match outcome {
            Err(_elapsed) => Err(self.error(
                host,
                io::ErrorKind::TimedOut,
                format!("no answer from the DNS servers within {timeout:?}"),
            )),
            Ok(Err(e)) => Err(self.resolve_error(host, &e)),
            Ok(Ok(lookup)) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    Err(self.error(
                        host,
                        io::ErrorKind::NotFound,
                        "the host has no IPv4 or IPv6 address",
                    ))
                } else {
                    Ok(ips)
                }
            }
        }
    }

    /// The DNS half, created on first use.
    fn dns(&self, host: &str) -> Result<Arc<Dns>> {
        let mut slot = self
            .inner
            .dns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(dns) = slot.as_ref() {
            return Ok(dns.clone());
        }
        let dns = Arc::new(self.build_dns(host)?);
        *slot = Some(dns.clone());
        Ok(dns)
    }

    fn build_dns(&self, host: &str) -> Result<Dns> {
        let opts = &self.inner.opts;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("dns-resolver")
            .build()
            .map_err(|e| self.error(host, e.kind(), format!("start the DNS runtime: {e}")))?;
        // hickory's connection provider looks for the runtime it runs on.
        let _entered = runtime.enter();
        let provider = TokioConnectionProvider::default();
        let mut builder = match &opts.name_servers {
            Some(servers) => {
                let mut config = ResolverConfig::new();
                for &addr in servers {
                    config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                    config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
                }
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider).map_err(|e| {
                self.error(
                    host,
                    io::ErrorKind::NotFound,
                    format!("no usable DNS configuration: {e}"),
                )
            })?,
        };
        let hickory: &mut ResolverOpts = builder.options_mut();
        hickory.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The hosts file is read by us, fresh on every lookup.
        hickory.use_hosts_file = ResolveHosts::Never;
        // Leave room for one retry inside the overall deadline.
        let per_try = (opts.timeout / 2).max(Duration::from_millis(100));
        hickory.timeout = hickory.timeout.min(per_try);
        hickory.attempts = hickory.attempts.clamp(1, 2);
        let resolver = builder.build();
        drop(_entered);
        Ok(Dns {
            runtime: Some(runtime),
            resolver,
        })
    }

    fn resolve_error(&self, host: &str, e: &ResolveError) -> Error {
        if e.is_nx_domain() {
            self.error(host, io::ErrorKind::NotFound, "no such host")
        } else if e.is_no_records_found() {
            self.error(
                host,
                io::ErrorKind::NotFound,
                "the host has no IPv4 or IPv6 address",
            )
        } else {
            let timed_out = e.proto().is_some_and(|p| {
                matches!(p.kind(), hickory_resolver::proto::ProtoErrorKind::Timeout)
            });
            let kind = if timed_out {
                io::ErrorKind::TimedOut
            } else {
                io::ErrorKind::Other
            };
            self.error(host, kind, e.to_string())
        }
    }

    fn error(&self, host: &str, kind: io::ErrorKind, msg: impl fmt::Display) -> Error {
        Error::Os {
            channel: self.inner.opts.name.clone(),
            op: format!("resolve host {host:?}"),
            source: io::Error::new(kind, msg.to_string()),
        }
    }
}

/// `localhost.` or a name under it (RFC 6761 §6.3).
fn is_localhost(name: &Name) -> bool {
    let text = name.to_ascii();
    let text = text.trim_end_matches('.');
    text.eq_ignore_ascii_case("localhost")
        || text.len() > ".localhost".len()
            && text[text.len() - ".localhost".len()..].eq_ignore_ascii_case(".localhost")
}

/// Deduplicate keeping the first occurrence, IPv4 before IPv6, each family
/// in its given order.
fn ordered(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for want_v4 in [true, false] {
        for ip in &ips {
            if ip.is_ipv4() == want_v4 && !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_puts_ipv4_first_and_dedups() {
        let a: IpAddr = "::1".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(ordered(vec![a, c, b, c, a]), vec![c, b, a]);
    }

    #[test]
    fn localhost_zone() {
        for yes in ["localhost", "LocalHost.", "a.localhost", "x.y.localhost."] {
            assert!(is_localhost(&Name::from_str(yes).unwrap()), "{yes}");
        }
        for no in ["notlocalhost", "localhost.com", "example.org"] {
            assert!(!is_localhost(&Name::from_str(no).unwrap()), "{no}");
        }
    }
}
