//! The demo page that `gangway serve` answers at `GET /`, and the record of handshakes it shows.
//!
//! Browsers do not let scripts see the headers of the opening handshake, so the page cannot read
//! the `Sec-WebSocket-Key` it sent or the `Sec-WebSocket-Accept` it got. Instead it tags its
//! WebSocket URL with `?id=RANDOM`; the server records what it saw for that id in a
//! [`HandshakeLog`], and the page fetches `GET /handshake?id=RANDOM` once the socket is open.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

/// The page: self-contained HTML, CSS and JavaScript (no external resources).
pub(crate) const PAGE: &str = include_str!("demo.html");

/// The page as served: its chat tab says whether the server broadcasts (`serve --broadcast`) or
/// echoes.
pub(crate) fn page(broadcast: bool) -> String {
    if broadcast {
        PAGE.replacen(
            "<body data-broadcast=\"false\">",
            "<body data-broadcast=\"true\">",
            1,
        )
    } else {
        PAGE.to_owned()
    }
}

/// How many handshakes are remembered; the oldest is forgotten first. Each entry holds at most a
/// request head (16 KiB by default), so the log stays within a few MiB whatever clients do.
const CAPACITY: usize = 256;

/// Longest accepted id.
const MAX_ID_LEN: usize = 64;

/// What the server saw and answered during one opening handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HandshakeRecord {
    /// The request line, e.g. `GET /demo?id=x HTTP/1.1`.
    pub(crate) request_line: String,
    /// The request headers in order, names lowercase (values decoded lossily as UTF-8).
    pub(crate) headers: Vec<(String, String)>,
    /// `Sec-WebSocket-Key` as the client sent it; `None` over HTTP/2, which has no key
    /// (RFC 8441 §5).
    pub(crate) key: Option<String>,
    /// The `Sec-WebSocket-Accept` the server answered; `None` over HTTP/2.
    pub(crate) accept: Option<String>,
    /// The selected subprotocol.
    pub(crate) protocol: Option<String>,
}

impl HandshakeRecord {
    /// The record as a JSON object (the body of `GET /handshake?id=ID`).
    pub(crate) fn to_json(&self, id: &str) -> String {
        let mut out = String::from("{");
        let _ = write!(out, "\"id\":{}", json_string(id));
        let _ = write!(out, ",\"request_line\":{}", json_string(&self.request_line));
        let _ = write!(out, ",\"key\":{}", json_option(self.key.as_deref()));
        let _ = write!(out, ",\"accept\":{}", json_option(self.accept.as_deref()));
        let _ = write!(
            out,
            ",\"protocol\":{}",
            json_option(self.protocol.as_deref())
        );
        out.push_str(",\"headers\":[");
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},{}]", json_string(name), json_string(value));
        }
        out.push_str("]}");
        out
    }
}

/// A bounded map from page-chosen ids to handshake records, shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct HandshakeLog {
    entries: Mutex<VecDeque<(String, HandshakeRecord)>>,
}

impl HandshakeLog {
    /// Remember `record` under `id`, replacing an older record with the same id and forgetting the
    /// oldest one when full.
    pub(crate) fn insert(&self, id: &str, record: HandshakeRecord) {
        let mut entries = self.lock();
        entries.retain(|(k, _)| k != id);
        if entries.len() >= CAPACITY {
            entries.pop_front();
        }
        entries.push_back((id.to_owned(), record));
    }

    /// Change the record under `id`, if it is still there.
    pub(crate) fn update(&self, id: &str, f: impl FnOnce(&mut HandshakeRecord)) {
        if let Some((_, r)) = self.lock().iter_mut().find(|(k, _)| k == id) {
            f(r);
        }
    }

    /// Forget the record under `id`.
    pub(crate) fn remove(&self, id: &str) {
        self.lock().retain(|(k, _)| k != id);
    }

    /// The record under `id`.
    pub(crate) fn get(&self, id: &str) -> Option<HandshakeRecord> {
        self.lock()
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, r)| r.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, HandshakeRecord)>> {
        // A panic while holding the lock cannot leave the deque inconsistent (every change is a
        // single VecDeque call), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `id` parameter of a query string, if present and well-formed: 1 to 64 characters from
/// `[A-Za-z0-9_-]`. Anything else is ignored rather than stored.
pub(crate) fn query_id(query: Option<&str>) -> Option<&str> {
    let id = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("id="))?;
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    well_formed.then_some(id)
}

/// `s` as a JSON string literal, or `null`.
fn json_option(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), json_string)
}

/// `s` as a JSON string literal (RFC 8259 §7). `<`, `>` and `&` are escaped too, so the JSON stays
/// inert if someone ever embeds it in HTML.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{7f}' || matches!(c, '<' | '>' | '&') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            // U+2028 and U+2029 are valid in JSON but not in older JavaScript string literals.
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> HandshakeRecord {
        HandshakeRecord {
            request_line: "GET /demo?id=a HTTP/1.1".into(),
            headers: vec![("host".into(), "127.0.0.1:9001".into())],
            key: Some(key.into()),
            accept: Some("accept".into()),
            protocol: None,
        }
    }

    #[test]
    fn the_page_says_whether_the_server_broadcasts() {
        let marker = |b: bool| format!("<body data-broadcast=\"{b}\">");
        assert_eq!(page(false).matches(&marker(false)).count(), 1);
        assert_eq!(page(true).matches(&marker(true)).count(), 1);
        assert!(!page(true).contains(&marker(false)));
    }

    #[test]
    fn query_id_accepts_only_short_safe_ids() {
        assert_eq!(query_id(Some("id=abc-DEF_09")), Some("abc-DEF_09"));
        assert_eq!(query_id(Some("x=1&id=abc")), Some("abc"));
        assert_eq!(query_id(None), None);
        assert_eq!(query_id(Some("id=")), None);
        assert_eq!(query_id(Some("id=a%20b")), None);
        assert_eq!(query_id(Some("id=<script>")), None);
        assert_eq!(query_id(Some("xid=abc")), None);
        let long = format!("id={}", "a".repeat(65));
        assert_eq!(query_id(Some(&long)), None);
        let max = format!("id={}", "a".repeat(64));
        assert_eq!(query_id(Some(&max)).map(str::len), Some(64));
    }

    #[test]
    fn json_strings_escape_quotes_controls_and_html() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_string("\n\r\t\x01"), "\"\\n\\r\\t\\u0001\"");
        assert_eq!(json_string("</script>"), "\"\\u003c/script\\u003e\"");
        assert_eq!(json_string("\u{1F600}"), "\"\u{1F600}\"");
        assert_eq!(json_string("\u{2028}"), "\"\\u2028\"");
    }

    #[test]
    fn record_serializes_to_json() {
        let mut r = record("k");
        assert_eq!(
            r.to_json("a"),
            "{\"id\":\"a\",\"request_line\":\"GET /demo?id=a HTTP/1.1\",\"key\":\"k\",\
             \"accept\":\"accept\",\"protocol\":null,\"headers\":[[\"host\",\"127.0.0.1:9001\"]]}"
        );
        r.protocol = Some("chat".into());
        assert!(r.to_json("a").contains("\"protocol\":\"chat\""));
    }

    #[test]
    fn log_replaces_same_id_and_evicts_oldest_when_full() {
        let log = HandshakeLog::default();
        log.insert("a", record("1"));
        log.insert("a", record("2"));
        assert_eq!(log.get("a").and_then(|r| r.key), Some("2".into()));
        for i in 0..CAPACITY {
            log.insert(&format!("n{i}"), record("x"));
        }
        assert_eq!(log.get("a"), None, "oldest entry evicted");
        assert!(log.get("n0").is_some());
        assert!(log.get(&format!("n{}", CAPACITY - 1)).is_some());
        assert_eq!(log.lock().len(), CAPACITY);
    }

    #[test]
    fn log_update_and_remove() {
        let log = HandshakeLog::default();
        log.insert("a", record("1"));
        log.update("a", |r| r.protocol = Some("chat".into()));
        assert_eq!(log.get("a").and_then(|r| r.protocol), Some("chat".into()));
        log.remove("a");
        assert_eq!(log.get("a"), None);
        log.update("a", |_| panic!("no record to update"));
    }
}
