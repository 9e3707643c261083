//! Client proxies: a tunnel to the server through an HTTP proxy (`CONNECT`, RFC 9110 §9.3.6) or a
//! SOCKS5 proxy (RFC 1928, with RFC 1929 username/password), chosen explicitly or from the
//! environment. `wss://` goes through the tunnel too: TLS is spoken end to end with the server,
//! inside it, so the proxy sees only the host name and port.
//!
//! Proxy URLs, as curl reads them:
//!
//! - `http://[user:password@]host[:port]`: HTTP `CONNECT`; credentials become
//!   `Proxy-Authorization: Basic` (RFC 7617). A URL without a scheme is taken as `http://`.
//! - `socks5://[user:password@]host[:port]`: SOCKS5; the server's name is resolved **here** and
//!   the proxy is given an address.
//! - `socks5h://[user:password@]host[:port]`: SOCKS5; the name is given to the proxy, which
//!   resolves it (nothing about the server is looked up locally).
//!
//! The port defaults to 1080 for every scheme (curl's default). User name and password may be
//! percent-encoded (`p%40ss` for `p@ss`). TLS to the proxy itself (`https://` proxies) is not
//! supported.
//!
//! The environment ([`ClientBuilder::proxy_from_env`](crate::ClientBuilder::proxy_from_env); the
//! `gangway` CLI always reads it, like curl), lowercase names first:
//!
//! - `wss://`: `https_proxy`, `HTTPS_PROXY`; `ws://`: `http_proxy`, `HTTP_PROXY` (the uppercase one
//!   is ignored when `REQUEST_METHOD` is set: a CGI program gets `HTTP_PROXY` from any request's
//!   `Proxy` header, "httpoxy");
//! - then `all_proxy`, `ALL_PROXY` for both;
//! - `no_proxy`, `NO_PROXY`: hosts reached directly, a comma- (or space-) separated list: `*` for
//!   every host; a name, which matches itself and every name under it (`example.com` and `.example.com`
//!   both match `example.com` and `ws.example.com`, not `badexample.com`); an IP address; an IP
//!   range (`10.0.0.0/8`, `fd00::/8`). Ports in entries are ignored. As in curl, loopback
//!   addresses and `localhost` are **not** exempt unless listed.
//!
//! Empty variables count as unset.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use gangway_proto::handshake::Parsed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::head::HeadError;

/// The port of a proxy URL without one (curl's default, for every scheme).
const DEFAULT_PROXY_PORT: u16 = 1080;

/// Largest answer head accepted from an HTTP proxy.
const MAX_PROXY_HEAD: usize = 16 << 10;

/// What went wrong on the way through a proxy.
///
/// Proxy URLs are never shown with their password.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// A proxy URL (given to the builder or found in the environment) that cannot be used.
    InvalidUrl {
        /// The URL, without its user information.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The proxy could not be reached, or the connection to it failed before the tunnel was open.
    Io {
        /// The proxy's `host:port`.
        proxy: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The HTTP proxy answered `CONNECT` with a status other than 2xx (407: credentials missing
    /// or refused; 403: the destination is not allowed; 502: the proxy could not reach it).
    Status {
        /// The proxy's `host:port`.
        proxy: String,
        /// The status code.
        status: u16,
        /// The reason phrase the proxy sent.
        reason: String,
    },
    /// The proxy's answer does not follow its protocol.
    InvalidResponse {
        /// The proxy's `host:port`.
        proxy: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The SOCKS5 proxy refused to connect to the server (RFC 1928 §6 reply code).
    SocksRefused {
        /// The proxy's `host:port`.
        proxy: String,
        /// The reply code (1 to 8 are defined).
        code: u8,
    },
    /// The SOCKS5 proxy refused our credentials, or wants an authentication we cannot do.
    SocksAuth {
        /// The proxy's `host:port`.
        proxy: String,
        /// What happened.
        reason: &'static str,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::InvalidUrl { url, reason } => {
                write!(f, "invalid proxy url {url:?}: {reason}")
            }
            ProxyError::Io { proxy, .. } => write!(f, "connection to proxy {proxy} failed"),
            ProxyError::Status {
                proxy,
                status,
                reason,
            } => {
                write!(f, "proxy {proxy} refused the tunnel: status {status}")?;
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                Ok(())
            }
            ProxyError::InvalidResponse { proxy, reason } => {
                write!(f, "invalid answer from proxy {proxy}: {reason}")
            }
            ProxyError::SocksRefused { proxy, code } => write!(
                f,
                "socks5 proxy {proxy} refused the connection: {} (reply {code})",
                socks_reply_text(*code)
            ),
            ProxyError::SocksAuth { proxy, reason } => {
                write!(f, "socks5 proxy {proxy}: {reason}")
            }
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The meaning of a SOCKS5 reply code (RFC 1928 §6).
fn socks_reply_text(code: u8) -> &'static str {
    match code {
        1 => "general socks server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "ttl expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply code",
    }
}

/// How a client picks its proxy.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxySettings {
    choice: Choice,
    /// Hosts reached directly; when `None` and the proxy comes from the environment, the
    /// environment's `no_proxy` applies.
    bypass: Option<NoProxy>,
}

#[derive(Clone, Debug, Default)]
enum Choice {
    /// Connect directly.
    #[default]
    Direct,
    /// Always this proxy (except for bypassed hosts).
    Fixed(Proxy),
    /// Read the environment at each connect.
    FromEnv,
}

impl ProxySettings {
    pub(crate) fn fixed(&mut self, url: &str) -> Result<(), ProxyError> {
        self.choice = Choice::Fixed(Proxy::parse(url)?);
        Ok(())
    }

    pub(crate) fn direct(&mut self) {
        self.choice = Choice::Direct;
    }

    pub(crate) fn use_env(&mut self) {
        self.choice = Choice::FromEnv;
    }

    pub(crate) fn bypass(&mut self, list: &str) {
        self.bypass = Some(NoProxy::parse(list));
    }

    /// The proxy for a connection to `host` (no IPv6 brackets), if any.
    pub(crate) fn select(&self, secure: bool, host: &str) -> Result<Option<Proxy>, ProxyError> {
        self.select_with(secure, host, &|name| std::env::var(name).ok())
    }

    fn select_with(
        &self,
        secure: bool,
        host: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>, ProxyError> {
        let bypassed = |env_list: Option<String>| match (&self.bypass, env_list) {
            (Some(list), _) => list.matches(host),
            (None, Some(list)) => NoProxy::parse(&list).matches(host),
            (None, None) => false,
        };
        match &self.choice {
            Choice::Direct => Ok(None),
            Choice::Fixed(proxy) => Ok((!bypassed(None)).then(|| proxy.clone())),
            Choice::FromEnv => {
                let Some(url) = env_proxy_url(secure, env) else {
                    return Ok(None);
                };
                if bypassed(first_set(env, &["no_proxy", "NO_PROXY"])) {
                    return Ok(None);
                }
                Proxy::parse(&url).map(Some)
            }
        }
    }
}

/// The first of `names` that is set and not empty.
fn first_set(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
}

/// The proxy URL the environment names for `ws://` (`secure == false`) or `wss://`.
fn env_proxy_url(secure: bool, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let scheme_vars: &[&str] = if secure {
        &["https_proxy", "HTTPS_PROXY"]
    } else if env("REQUEST_METHOD").is_some() {
        // Under CGI, HTTP_PROXY is the request's `Proxy` header: anyone could set it.
        &["http_proxy"]
    } else {
        &["http_proxy", "HTTP_PROXY"]
    };
    first_set(env, scheme_vars).or_else(|| first_set(env, &["all_proxy", "ALL_PROXY"]))
}

/// A parsed proxy URL.
#[derive(Clone)]
pub(crate) struct Proxy {
    kind: Kind,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    HttpConnect,
    /// `remote_dns`: the proxy resolves the server's name (`socks5h://`).
    Socks5 {
        remote_dns: bool,
    },
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl Proxy {
    /// Parse a proxy URL (see the module docs).
    pub(crate) fn parse(url: &str) -> Result<Proxy, ProxyError> {
        let url = url.trim();
        let with_scheme;
        let full = if url.contains("://") {
            url
        } else {
            with_scheme = format!("http://{url}");
            &with_scheme
        };
        let invalid = |reason| ProxyError::InvalidUrl {
            url: redact(full),
            reason,
        };
        let uri: http::Uri = full.parse().map_err(|_| invalid("not a valid url"))?;
        let kind = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Kind::HttpConnect,
            Some("socks5") => Kind::Socks5 { remote_dns: false },
            Some("socks5h") => Kind::Socks5 { remote_dns: true },
            Some("https") => return Err(invalid("tls to the proxy (https://) is not supported")),
            _ => return Err(invalid("scheme must be http, socks5 or socks5h")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(DEFAULT_PROXY_PORT);
        let credentials = match authority.as_str().rsplit_once('@') {
            None => None,
            Some((userinfo, _)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or_else(|| invalid("bad percent-encoding"))?;
                let password =
                    percent_decode(password).ok_or_else(|| invalid("bad percent-encoding"))?;
                Some((user, password))
            }
        };
        Ok(Proxy {
            kind,
            host,
            port,
            credentials,
        })
    }

    /// `host:port` of the proxy, for messages.
    fn name(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// Connect to the proxy and open a tunnel to `host:port` (no IPv6 brackets).
    pub(crate) async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let io_err = |source| ProxyError::Io {
            proxy: self.name(),
            source,
        };
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io_err)?;
        // Frames are written whole; waiting to coalesce them only adds latency.
        tcp.set_nodelay(true).map_err(io_err)?;
        tracing::debug!(proxy = %self.name(), kind = ?self.kind, %host, port, "opening a tunnel");
        match self.kind {
            Kind::HttpConnect => self.http_connect(&mut tcp, host, port).await?,
            Kind::Socks5 { remote_dns } => self.socks5(&mut tcp, host, port, remote_dns).await?,
        }
        Ok(tcp)
    }

    /// `CONNECT host:port` and a 2xx answer (RFC 9110 §9.3.6).
    async fn http_connect(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
    ) -> Result<(), ProxyError> {
        let io_err = |source| ProxyError::Io {
            proxy: self.name(),
            source,
        };
        let invalid = |reason| ProxyError::InvalidResponse {
            proxy: self.name(),
            reason,
        };
        // The request target is the authority form, also as the Host (RFC 9112 §3.2.3).
        let target = host_port(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(io_err)?;
        tcp.flush().await.map_err(io_err)?;

        let answer = crate::head::read_head(tcp, MAX_PROXY_HEAD, |buf| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or_default();
                    let reason: String = response
                        .reason
                        .unwrap_or_default()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(100)
                        .collect();
                    Ok(Parsed::Complete((status, reason), head_len))
                }
                Err(_) => Err(()),
            }
        })
        .await;
        let ((status, reason), rest) = match answer {
            Ok(answer) => answer,
            Err(HeadError::Io(e)) => return Err(io_err(e)),
            Err(HeadError::Eof) => {
                return Err(invalid("connection closed before the answer was complete"))
            }
            Err(HeadError::TooLarge) => return Err(invalid("answer head too large")),
            Err(HeadError::Parse(())) => return Err(invalid("not an http answer")),
        };
        if !(200..300).contains(&status) {
            return Err(ProxyError::Status {
                proxy: self.name(),
                status,
                reason,
            });
        }
        // The server speaks only after our request (or TLS hello): anything here would be the
        // proxy's own, and it cannot be handed on.
        if !rest.is_empty() {
            return Err(invalid("data after the 2xx answer"));
        }
        Ok(())
    }

    /// The SOCKS5 exchange (RFC 1928 §3, §4, §6; RFC 1929 §2).
    async fn socks5(
        &self,
        tcp: &mut TcpStream,
        host: &str,
        port: u16,
        remote_dns: bool,
    ) -> Result<(), ProxyError> {
        let io_err = |source| ProxyError::Io {
            proxy: self.name(),
            source,
        };
        let invalid = |reason| ProxyError::InvalidResponse {
            proxy: self.name(),
            reason,
        };
        let auth_err = |reason| ProxyError::SocksAuth {
            proxy: self.name(),
            reason,
        };
        const NO_AUTH: u8 = 0x00;
        const USER_PASS: u8 = 0x02;
        const NO_ACCEPTABLE: u8 = 0xff;

        // Method selection: offer username/password only when we have credentials.
        let greeting: &[u8] = if self.credentials.is_some() {
            &[5, 2, NO_AUTH, USER_PASS]
        } else {
            &[5, 1, NO_AUTH]
        };
        tcp.write_all(greeting).await.map_err(io_err)?;
        let mut choice = [0u8; 2];
        tcp.read_exact(&mut choice).await.map_err(io_err)?;
        if choice[0] != 5 {
            return Err(invalid("not a socks5 answer"));
        }
        match (choice[1], &self.credentials) {
            (NO_AUTH, _) => {}
            (USER_PASS, Some((user, password))) => {
                let (user, password) = (user.as_bytes(), password.as_bytes());
                let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len()))
                else {
                    return Err(auth_err("user name or password longer than 255 bytes"));
                };
                let mut request = Vec::with_capacity(3 + user.len() + password.len());
                request.extend_from_slice(&[1, ulen]);
                request.extend_from_slice(user);
                request.push(plen);
                request.extend_from_slice(password);
                tcp.write_all(&request).await.map_err(io_err)?;
                let mut status = [0u8; 2];
                tcp.read_exact(&mut status).await.map_err(io_err)?;
                // RFC 1929 §2: status 0 is success, anything else a failure.
                if status[1] != 0 {
                    return Err(auth_err("user name and password refused"));
                }
            }
            (NO_ACCEPTABLE, None) => {
                return Err(auth_err(
                    "authentication required: give user:password in the proxy url",
                ))
            }
            (NO_ACCEPTABLE, Some(_)) => {
                return Err(auth_err("no acceptable authentication method"))
            }
            _ => return Err(invalid("chose an authentication method we did not offer")),
        }

        // CONNECT request with the destination.
        let mut request = vec![5, 1, 0];
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) if remote_dns => None,
            Err(_) => {
                // `socks5://`: resolve here; the first address is used.
                let mut addrs = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(io_err)?;
                let addr: SocketAddr = addrs.next().ok_or_else(|| {
                    io_err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} has no address"),
                    ))
                })?;
                Some(addr.ip())
            }
        };
        match ip {
            Some(IpAddr::V4(v4)) => {
                request.push(1);
                request.extend_from_slice(&v4.octets());
            }
            Some(IpAddr::V6(v6)) => {
                request.push(4);
                request.extend_from_slice(&v6.octets());
            }
            None => {
                let Ok(len) = u8::try_from(host.len()) else {
                    return Err(ProxyError::InvalidUrl {
                        url: host.to_owned(),
                        reason: "host name longer than 255 bytes cannot go through socks5",
                    });
                };
                request.push(3);
                request.push(len);
                request.extend_from_slice(host.as_bytes());
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        tcp.write_all(&request).await.map_err(io_err)?;

        // Reply: VER REP RSV ATYP BND.ADDR BND.PORT.
        let mut head = [0u8; 4];
        tcp.read_exact(&mut head).await.map_err(io_err)?;
        if head[0] != 5 {
            return Err(invalid("not a socks5 reply"));
        }
        if head[1] != 0 {
            return Err(ProxyError::SocksRefused {
                proxy: self.name(),
                code: head[1],
            });
        }
        let addr_len = match head[3] {
            1 => 4,
            4 => 16,
            3 => {
                let mut len = [0u8; 1];
                tcp.read_exact(&mut len).await.map_err(io_err)?;
                usize::from(len[0])
            }
            _ => return Err(invalid("unknown address type in the reply")),
        };
        // The bound address is of no use to a client; it is read so nothing of it is left
        // for the tunnel.
        let mut bound = [0u8; 255 + 2];
        tcp.read_exact(&mut bound[..addr_len + 2])
            .await
            .map_err(io_err)?;
        Ok(())
    }
}

/// `host:port`, the host bracketed when it is an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The URL without its user information, for messages.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Decode `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A `no_proxy` list (see the module docs).
#[derive(Clone, Debug, Default)]
struct NoProxy {
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// Lowercase, without leading or trailing dots.
    Name(String),
    Ip(IpAddr),
    Range(IpAddr, u8),
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut parsed = NoProxy::default();
        for item in list.split([',', ' ', '\t']).map(str::trim) {
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                parsed.all = true;
                continue;
            }
            let item = item.trim_start_matches('[');
            if let Some((ip, bits)) = item.split_once('/') {
                if let (Ok(ip), Ok(bits)) = (
                    ip.trim_end_matches(']').parse::<IpAddr>(),
                    bits.parse::<u8>(),
                ) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    if bits <= max {
                        parsed.entries.push(Entry::Range(ip, bits));
                    }
                }
                continue;
            }
            if let Ok(ip) = item.trim_end_matches(']').parse::<IpAddr>() {
                parsed.entries.push(Entry::Ip(ip));
                continue;
            }
            // `host:port` and `[v6]:port`: the port is ignored.
            let name = match item.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => item,
            };
            let name = name.trim_end_matches(']');
            if let Ok(ip) = name.parse::<IpAddr>() {
                parsed.entries.push(Entry::Ip(ip));
                continue;
            }
            let name = name.trim_matches('.').to_ascii_lowercase();
            if !name.is_empty() {
                parsed.entries.push(Entry::Name(name));
            }
        }
        parsed
    }

    /// Whether `host` (no IPv6 brackets) is reached directly.
    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::Ip(listed), Some(ip)) => *listed == ip,
            (Entry::Range(net, bits), Some(ip)) => in_range(ip, *net, *bits),
            (Entry::Name(name), None) => {
                host == *name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.'))
            }
            _ => false,
        })
    }
}

/// Whether `ip` is in `net/bits` (same address family only).
fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn proxy_urls_of_each_scheme_are_parsed() {
        let p = Proxy::parse("http://user:p%40ss@proxy.example:3128").unwrap();
        assert_eq!(p.kind, Kind::HttpConnect);
        assert_eq!((p.host.as_str(), p.port), ("proxy.example", 3128));
        assert_eq!(p.credentials, Some(("user".into(), "p@ss".into())));

        let p = Proxy::parse("proxy.example").unwrap();
        assert_eq!(p.kind, Kind::HttpConnect, "no scheme: http");
        assert_eq!(p.port, DEFAULT_PROXY_PORT);
        assert_eq!(p.credentials, None);

        let p = Proxy::parse("socks5://[::1]:1081").unwrap();
        assert_eq!(p.kind, Kind::Socks5 { remote_dns: false });
        assert_eq!((p.host.as_str(), p.port), ("::1", 1081));

        let p = Proxy::parse("SOCKS5H://u@127.0.0.1").unwrap();
        assert_eq!(p.kind, Kind::Socks5 { remote_dns: true });
        assert_eq!(p.credentials, Some(("u".into(), String::new())));
    }

    #[test]
    fn unusable_proxy_urls_are_refused_without_showing_the_password() {
        for (url, why) in [
            (
                "https://proxy:443",
                "tls to the proxy (https://) is not supported",
            ),
            ("ftp://proxy", "scheme must be http, socks5 or socks5h"),
            ("http://u:p%zz@proxy", "bad percent-encoding"),
        ] {
            match Proxy::parse(url) {
                Err(ProxyError::InvalidUrl { reason, .. }) => assert_eq!(reason, why, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let err = Proxy::parse("gopher://alice:secret@proxy:1").unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("secret") && !text.contains("alice"),
            "{text}"
        );
        let debug = format!("{:?}", Proxy::parse("http://alice:secret@proxy:1").unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn no_proxy_names_match_themselves_and_their_subdomains() {
        let list = NoProxy::parse("example.com, .internal.test,Upper.Case:8080");
        for host in [
            "example.com",
            "ws.example.com",
            "EXAMPLE.COM.",
            "internal.test",
            "a.b.internal.test",
            "upper.case",
        ] {
            assert!(list.matches(host), "{host}");
        }
        for host in [
            "badexample.com",
            "example.com.evil",
            "test",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(!list.matches(host), "{host}");
        }
    }

    #[test]
    fn no_proxy_addresses_and_ranges_match_ip_hosts_only() {
        let list = NoProxy::parse("127.0.0.1 10.0.0.0/8,::1, [fd00::]/8, 192.168.1.1:80");
        for host in ["127.0.0.1", "10.200.3.4", "::1", "fd12::5", "192.168.1.1"] {
            assert!(list.matches(host), "{host}");
        }
        for host in ["127.0.0.2", "11.0.0.1", "::2", "fe80::1", "localhost"] {
            assert!(!list.matches(host), "{host}");
        }
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8"));
        assert!(
            !NoProxy::parse("0.0.0.0/0").matches("::1"),
            "families differ"
        );
        assert!(NoProxy::parse("a, *").matches("anything"));
        assert!(!NoProxy::parse("").matches("anything"));
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn from_env(secure: bool, host: &str, vars: &[(&str, &str)]) -> Option<(String, u16)> {
        let mut settings = ProxySettings::default();
        settings.use_env();
        settings
            .select_with(secure, host, &env_of(vars))
            .unwrap()
            .map(|p| (p.host, p.port))
    }

    #[test]
    fn environment_picks_the_variable_of_the_scheme_lowercase_first() {
        let vars = [
            ("http_proxy", "http://lower-http:1"),
            ("HTTP_PROXY", "http://upper-http:2"),
            ("HTTPS_PROXY", "http://upper-https:3"),
            ("ALL_PROXY", "socks5h://all:4"),
        ];
        assert_eq!(from_env(false, "h", &vars), Some(("lower-http".into(), 1)));
        assert_eq!(from_env(true, "h", &vars), Some(("upper-https".into(), 3)));
        assert_eq!(
            from_env(false, "h", &vars[1..]),
            Some(("upper-http".into(), 2))
        );
        assert_eq!(from_env(true, "h", &vars[3..]), Some(("all".into(), 4)));
        assert_eq!(from_env(false, "h", &[("https_proxy", "x:1")]), None);
        assert_eq!(
            from_env(false, "h", &[("http_proxy", "")]),
            None,
            "empty is unset"
        );
    }

    #[test]
    fn environment_ignores_uppercase_http_proxy_under_cgi() {
        let vars = [
            ("HTTP_PROXY", "http://attacker:1"),
            ("REQUEST_METHOD", "GET"),
        ];
        assert_eq!(from_env(false, "h", &vars), None);
    }

    #[test]
    fn environment_no_proxy_bypasses_listed_hosts_only() {
        let vars = [
            ("https_proxy", "http://proxy:8080"),
            ("NO_PROXY", "example.com,127.0.0.1"),
        ];
        assert_eq!(from_env(true, "ws.example.com", &vars), None);
        assert_eq!(from_env(true, "127.0.0.1", &vars), None);
        // Loopback is not exempt unless listed (curl's rule).
        assert_eq!(
            from_env(true, "localhost", &vars),
            Some(("proxy".into(), 8080))
        );
        assert_eq!(from_env(true, "::1", &vars), Some(("proxy".into(), 8080)));
    }

    #[test]
    fn explicit_bypass_list_overrides_the_environment() {
        let mut settings = ProxySettings::default();
        settings.use_env();
        settings.bypass("other.test");
        let env = env_of(&[("http_proxy", "proxy:1"), ("no_proxy", "*")]);
        assert!(settings.select_with(false, "h", &env).unwrap().is_some());
        assert!(settings
            .select_with(false, "x.other.test", &env)
            .unwrap()
            .is_none());

        let mut settings = ProxySettings::default();
        settings.fixed("socks5://proxy:9").unwrap();
        assert!(
            settings.select_with(false, "h", &env).unwrap().is_some(),
            "env unused"
        );
        settings.bypass("h");
        assert!(settings.select_with(false, "h", &env).unwrap().is_none());
        settings.direct();
        assert!(settings.select_with(false, "x", &env).unwrap().is_none());
    }

    #[test]
    fn status_error_names_the_status() {
        let e = ProxyError::Status {
            proxy: "127.0.0.1:3128".into(),
            status: 407,
            reason: "Proxy Authentication Required".into(),
        };
        assert_eq!(
            e.to_string(),
            "proxy 127.0.0.1:3128 refused the tunnel: status 407 Proxy Authentication Required"
        );
    }
}
