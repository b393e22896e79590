//! [`WebSocketUrl`]: `ws://HOST[:PORT][/PATH]` and `wss://...`.

use std::fmt;

use crate::error::{Error, Result};

/// A parsed `ws://` or `wss://` URL.
///
/// ```
/// use transit_channel::websocket::WebSocketUrl;
///
/// let u = WebSocketUrl::parse("wss://[::1]:8443/migrate")?;
/// assert!(u.secure);
/// assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 8443, "/migrate"));
/// assert_eq!(u.host_header(), "[::1]:8443");
/// assert_eq!(u.to_string(), "wss://[::1]:8443/migrate");
/// assert_eq!(WebSocketUrl::parse("ws://example.org")?.port, 80);
/// # Ok::<(), transit_channel::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebSocketUrl {
    /// `wss://`: TLS beneath the websocket.
    pub secure: bool,
    /// Host name or address, without IPv6 brackets.
    pub host: String,
    /// Port (80 for `ws://`, 443 for `wss://` when not given).
    pub port: u16,
    /// Request path with query, starting with `/`.
    pub path: String,
}

impl WebSocketUrl {
    /// Parse `ws://HOST[:PORT][/PATH]` or `wss://...`; IPv6 hosts go in
    /// brackets.
    pub fn parse(input: &str) -> Result<WebSocketUrl> {
        let bad = |what: &str| Error::Address {
            input: input.to_owned(),
            expected: format!("ws://HOST[:PORT][/PATH] or wss://HOST[:PORT][/PATH] ({what})"),
        };
        let (secure, rest) = if let Some(r) = input.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = input.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(bad("unknown scheme"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '['"))?;
            let after = &r[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ']'")),
            };
            (&r[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(bad("invalid host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            None if secure => 443,
            None => 80,
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("invalid path"));
        }
        Ok(WebSocketUrl {
            secure,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// The `Host` header value: `host:port`, IPv6 in brackets.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WebSocketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.secure { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let u = WebSocketUrl::parse("ws://127.0.0.1:4444/a/b?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 4444, "/a/b?x=1")
        );
        let u = WebSocketUrl::parse("ws://h?q").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/?q"));
        assert_eq!(WebSocketUrl::parse("wss://h").unwrap().port, 443);
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "http://h/",
            "ws://",
            "ws://:80/",
            "ws://h:x/",
            "ws://[::1/",
            "ws://h/a b",
        ] {
            assert!(WebSocketUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
