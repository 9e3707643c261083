//! Negotiating permessage-deflate (RFC 7692 §5, §7.1): the client's offer, the server's choice
//! among offers, and the client's check of the server's answer.

use crate::error::HandshakeError;
use crate::handshake::ExtensionOffer;

/// The extension token in `Sec-WebSocket-Extensions` (RFC 7692 §7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// Default [`DeflateConfig::level`]: zlib's default, the usual balance of ratio and speed.
pub const DEFAULT_LEVEL: u32 = 6;

/// Default [`DeflateConfig::threshold`]: messages under 32 bytes go uncompressed. DEFLATE saves
/// little or nothing on so few bytes (a fixed-Huffman block spends 7 to 9 bits per literal) and
/// the call costs more than the bytes it might save.
pub const DEFAULT_THRESHOLD: usize = 32;

/// The LZ77 window size when no parameter limits it: 2^15 = 32 KiB (RFC 7692 §7.1.2).
const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window a parameter may ask for: 2^8 = 256 bytes (§7.1.2.1, §7.1.2.2).
const MIN_WINDOW_BITS: u8 = 8;

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// What an endpoint wants from permessage-deflate, for either role.
///
/// The four window and context parameters carry the names of RFC 7692 §7.1 and mean the same in
/// both roles: `server_*` is about what the server compresses, `client_*` about what the client
/// compresses. What an endpoint does with them depends on its role:
///
/// | field | as a client | as a server |
/// | --- | --- | --- |
/// | `server_no_context_takeover` | asks the server to reset its compressor after each message; the server must agree or decline the offer | resets our compressor after each message, and says so |
/// | `client_no_context_takeover` | resets our compressor after each message, and says so (a hint) | tells the client to reset its compressor after each message |
/// | `server_max_window_bits` | asks the server to use at most 2^n bytes of window | uses at most 2^n bytes of window, and says so |
/// | `client_max_window_bits` | uses at most 2^n bytes of window, and says so (a hint) | tells a client that offered `client_max_window_bits` to use at most 2^n |
///
/// Without context takeover a direction keeps no state between messages (less memory per
/// connection, see the [module docs](super)), at the cost of compressing each message on its own.
/// Whatever we ask, the peer may ask for more: a server honours the client's
/// `server_no_context_takeover` and `server_max_window_bits`, a client the server's
/// `client_no_context_takeover` and `client_max_window_bits`.
///
/// Window bits are 8 to 15; values outside are taken as the nearest of the two. zlib cannot
/// compress raw DEFLATE with a 256-byte window (it silently uses 512 bytes, which a peer with a
/// 256-byte window could not inflate), so a direction limited to 8 bits is honoured by sending
/// its messages uncompressed (RFC 7692 §6 lets a sender leave any message uncompressed); we
/// still inflate what the peer compresses.
///
/// ```
/// use gangway_proto::extensions::permessage_deflate::DeflateConfig;
///
/// // A server with many mostly idle connections: no state kept between messages.
/// let mut config = DeflateConfig::default();
/// config.server_no_context_takeover = true;
/// config.client_no_context_takeover = true;
/// config.level = 1;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Offer (client) or accept (server) the extension at all. Default `true`.
    pub enabled: bool,
    /// Compression level, 0 (store) to 9 (smallest); values over 9 are taken as 9. Default
    /// [`DEFAULT_LEVEL`].
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed. Default
    /// [`DEFAULT_THRESHOLD`]. A message sent in fragments is compressed whatever its size, as
    /// its size is not known when its first frame goes out.
    pub threshold: usize,
    /// The server's LZ77 window, 2^n bytes (see the table above). `None`: 15, not mentioned.
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window, 2^n bytes (see the table above). `None`: 15; a client then
    /// offers `client_max_window_bits` without a value (it accepts any limit the server sets).
    pub client_max_window_bits: Option<u8>,
    /// No context takeover for what the server sends (see the table above).
    pub server_no_context_takeover: bool,
    /// No context takeover for what the client sends (see the table above).
    pub client_no_context_takeover: bool,
    /// Server: let the client keep context takeover only within the window of
    /// `client_max_window_bits`. A client that did not offer `client_max_window_bits` cannot be
    /// held to a window (RFC 7692 §7.1.2.2: the answer may not have it) and is answered
    /// `client_no_context_takeover` instead. Default `false`. With a window of at most 2^13
    /// bytes, a connection keeps only that window between messages (see the
    /// [module docs](super#memory-per-connection)): with this, no client costs more. No effect
    /// as a client.
    pub bounded_client_context: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            level: DEFAULT_LEVEL,
            threshold: DEFAULT_THRESHOLD,
            server_max_window_bits: None,
            client_max_window_bits: None,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            bounded_client_context: false,
        }
    }
}

/// What the two ends agreed on: the parameters of the server's response (RFC 7692 §7.1), with
/// the defaults filled in.
///
/// Both roles derive the same value from the response, so it is all a connection needs to know
/// about the agreement; each endpoint's own preferences (level, threshold, a smaller window of its
/// own) stay in its [`DeflateConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message (§7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (§7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The server compresses with a window of at most 2^n bytes, 8 to 15 (§7.1.2.1).
    pub server_max_window_bits: u8,
    /// The client compresses with a window of at most 2^n bytes, 8 to 15 (§7.1.2.2).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// A response with no parameters: context takeover and 32 KiB windows both ways.
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

impl DeflateParams {
    /// The parameters of a server's accepting response element (`permessage-deflate; ...`).
    ///
    /// This checks the element on its own (RFC 7692 §5: known parameters, each at most once,
    /// with valid values); whether it answers what was offered is [`check_response`]'s job.
    ///
    /// # Errors
    ///
    /// A short reason naming the parameter at fault.
    pub fn from_response(element: &ExtensionOffer) -> Result<Self, &'static str> {
        Self::from_answer(&Params::parse(element)?)
    }

    /// The agreement that a response's parsed parameters state.
    fn from_answer(params: &Params) -> Result<Self, &'static str> {
        // §7.1.2.2: in a response, client_max_window_bits "MUST have a value".
        let client_max_window_bits = match params.client_max_window_bits {
            Some(None) => return Err("permessage-deflate: client_max_window_bits without a value"),
            Some(Some(bits)) => bits,
            None => MAX_WINDOW_BITS,
        };
        Ok(DeflateParams {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            server_max_window_bits: params.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            client_max_window_bits,
        })
    }
}

/// A server's acceptance of one offer: what to answer and what was agreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The element for the response's `Sec-WebSocket-Extensions`.
    pub response: ExtensionOffer,
    /// What the response agrees on.
    pub params: DeflateParams,
}

impl DeflateConfig {
    /// A configuration that neither offers nor accepts the extension.
    pub fn disabled() -> Self {
        DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        }
    }

    /// No context takeover in either direction: every message is compressed and inflated on its
    /// own, so a connection keeps no compression state between messages (the states are
    /// borrowed from the thread for each message; see the [module docs](super)).
    ///
    /// The choice for a server with many connections: an idle connection costs nothing for the
    /// extension, where context takeover keeps about 400 KiB per connection. A server answers
    /// every offer with `server_no_context_takeover; client_no_context_takeover`, which RFC 7692
    /// lets it add to any answer (§7.1.1.1, §7.1.1.2), so every client that offers the
    /// extension can be held to it. Messages compress a little less (each without the previous
    /// ones to refer to), and a message sent to many connections can be compressed once for all
    /// ([`StatelessCompression`](super::StatelessCompression)).
    ///
    /// As a client, the offer asks the server for `server_no_context_takeover`, which a server
    /// must grant or decline the whole offer (§7.1.1.1).
    pub fn no_context_takeover() -> Self {
        DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        }
    }

    /// A server's choice for many connections that still lets clients compress well: what the
    /// server sends is compressed without context takeover (every message on its own, with the
    /// thread's shared state), and what the client sends keeps context takeover within a
    /// window of 2^`client_window_bits` bytes (8 to 13; more is taken as 13), the only thing a
    /// connection keeps between messages. A client that cannot be held to that window (its
    /// offer lacks `client_max_window_bits`) is answered `client_no_context_takeover`.
    ///
    /// Answers: `permessage-deflate; server_no_context_takeover; client_max_window_bits=12`
    /// to the offer of Chromium, Python `websockets` and Node `ws`
    /// (`permessage-deflate; client_max_window_bits`), and
    /// `permessage-deflate; server_no_context_takeover; client_no_context_takeover` to Firefox's
    /// (`permessage-deflate`). An idle connection then holds at most the client's window
    /// (4 KiB at 12 bits) for the extension. See the [module docs](super) for the figures.
    pub fn bounded_client_window(client_window_bits: u8) -> Self {
        DeflateConfig {
            server_no_context_takeover: true,
            client_max_window_bits: Some(client_window_bits.clamp(MIN_WINDOW_BITS, 13)),
            bounded_client_context: true,
            ..DeflateConfig::default()
        }
    }

    /// Client: the offer to send (RFC 7692 §5, §7.1).
    ///
    /// It always carries `client_max_window_bits` (§7.1.2.2: we can compress with any window the
    /// server picks), with our own limit as its value if we have one; the other parameters
    /// appear when this configuration asks for them.
    pub fn offer(&self) -> ExtensionOffer {
        let mut params = Vec::new();
        if self.server_no_context_takeover {
            params.push((SERVER_NO_CONTEXT_TAKEOVER.to_owned(), None));
        }
        if self.client_no_context_takeover {
            params.push((CLIENT_NO_CONTEXT_TAKEOVER.to_owned(), None));
        }
        if let Some(bits) = self.server_max_window_bits {
            params.push((
                SERVER_MAX_WINDOW_BITS.to_owned(),
                Some(clamp_bits(bits).to_string()),
            ));
        }
        params.push((
            CLIENT_MAX_WINDOW_BITS.to_owned(),
            self.client_max_window_bits
                .map(|bits| clamp_bits(bits).to_string()),
        ));
        ExtensionOffer {
            name: EXTENSION_NAME.to_owned(),
            params,
        }
    }

    /// Server: accept the first acceptable permessage-deflate offer among `offers` (all the
    /// client's extension offers, in its order of preference), or none.
    ///
    /// An offer is declined, and the next one tried, when it is not valid (RFC 7692 §5: an
    /// unknown parameter, a parameter given twice, or a value that is not an integer from 8 to
    /// 15 without leading zeroes, or a value where none belongs). Every valid offer can be
    /// honoured. The response then:
    ///
    /// - has `server_no_context_takeover` if the client asked for it (§7.1.1.1: it must be
    ///   accepted that way) or we want it;
    /// - has `client_no_context_takeover` if the client offered it or we want it (§7.1.1.2: a
    ///   server may always include it), or with [`bounded_client_context`] if the client did not
    ///   offer `client_max_window_bits`;
    /// - has `server_max_window_bits` if the client asked for a limit (answered with its value or
    ///   our smaller one, §7.1.2.1) or our own limit is under 15;
    /// - has `client_max_window_bits` if the client offered that parameter (§7.1.2.2: never
    ///   otherwise) and the smaller of its value and ours is under 15.
    ///
    /// `None` also when this configuration is disabled.
    ///
    /// [`bounded_client_context`]: Self::bounded_client_context
    pub fn accept(&self, offers: &[ExtensionOffer]) -> Option<Accepted> {
        if !self.enabled {
            return None;
        }
        offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
            .find_map(|o| self.accept_one(o))
    }

    fn accept_one(&self, offer: &ExtensionOffer) -> Option<Accepted> {
        // §5: "A server MUST decline an extension negotiation offer for this extension if ..."
        // the offer is not valid.
        let offered = Params::parse(offer).ok()?;
        let server_no_context_takeover =
            offered.server_no_context_takeover || self.server_no_context_takeover;
        // §7.1.1.2: a server may always add client_no_context_takeover; here when asked to, or
        // when the client's context would not be bounded by a window we can impose.
        let unbounded = self.bounded_client_context && offered.client_max_window_bits.is_none();
        let client_no_context_takeover =
            offered.client_no_context_takeover || self.client_no_context_takeover || unbounded;
        let our_server_limit = self
            .server_max_window_bits
            .map_or(MAX_WINDOW_BITS, clamp_bits);
        let server_max_window_bits = offered
            .server_max_window_bits
            .map_or(our_server_limit, |asked| asked.min(our_server_limit));
        let client_max_window_bits = match offered.client_max_window_bits {
            // §7.1.2.2: without the parameter in the offer the client may not support a limit,
            // and the response MUST NOT have one: it keeps the full window.
            None => MAX_WINDOW_BITS,
            Some(hint) => hint.unwrap_or(MAX_WINDOW_BITS).min(
                self.client_max_window_bits
                    .map_or(MAX_WINDOW_BITS, clamp_bits),
            ),
        };

        let mut params = Vec::new();
        if server_no_context_takeover {
            params.push((SERVER_NO_CONTEXT_TAKEOVER.to_owned(), None));
        }
        if client_no_context_takeover {
            params.push((CLIENT_NO_CONTEXT_TAKEOVER.to_owned(), None));
        }
        // §7.1.2.1: an offer with server_max_window_bits is accepted by answering with "the
        // same or smaller value"; without it, a server "MAY" still include one.
        if offered.server_max_window_bits.is_some() || server_max_window_bits < MAX_WINDOW_BITS {
            params.push((
                SERVER_MAX_WINDOW_BITS.to_owned(),
                Some(server_max_window_bits.to_string()),
            ));
        }
        if client_max_window_bits < MAX_WINDOW_BITS {
            params.push((
                CLIENT_MAX_WINDOW_BITS.to_owned(),
                Some(client_max_window_bits.to_string()),
            ));
        }
        Some(Accepted {
            response: ExtensionOffer {
                name: EXTENSION_NAME.to_owned(),
                params,
            },
            params: DeflateParams {
                server_no_context_takeover,
                client_no_context_takeover,
                server_max_window_bits,
                client_max_window_bits,
            },
        })
    }
}

/// Client: check the server's accepted extensions against what we offered (RFC 7692 §5, §7.1).
///
/// `offered` and `response` are the whole `Sec-WebSocket-Extensions` lists of the request and of
/// the response; only their permessage-deflate elements are looked at. `Ok(None)`: the server
/// declined (no such element in the response).
///
/// # Errors
///
/// [`HandshakeError::UnofferedExtension`] if the response has the extension and we offered none;
/// [`HandshakeError::InvalidHeader`] for `Sec-WebSocket-Extensions`, with a reason naming the
/// fault, if the response accepts it twice, if its element is not valid (§5: an unknown
/// parameter, one given twice, an invalid value), or if it answers none of our offers: it has
/// `client_max_window_bits` that no offer had, lacks the `server_max_window_bits` an offer asked
/// for or answers it with a larger value, or lacks the `server_no_context_takeover` an offer
/// asked for. The client then fails the connection (§5: "MUST _Fail the WebSocket
/// Connection_").
pub fn check_response(
    offered: &[ExtensionOffer],
    response: &[ExtensionOffer],
) -> Result<Option<DeflateParams>, HandshakeError> {
    let invalid = |why| HandshakeError::InvalidHeader("Sec-WebSocket-Extensions", why);
    let mut accepted = response
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME));
    let Some(element) = accepted.next() else {
        return Ok(None);
    };
    if accepted.next().is_some() {
        return Err(invalid("permessage-deflate accepted twice"));
    }
    let mut offers = offered
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .filter_map(|e| Params::parse(e).ok())
        .peekable();
    if offers.peek().is_none() {
        return Err(HandshakeError::UnofferedExtension(element.name.clone()));
    }
    let answer = Params::parse(element).map_err(invalid)?;
    let params = DeflateParams::from_answer(&answer).map_err(invalid)?;
    // The server accepted one of our offers; the reason reported is the mismatch with the
    // first, which is the one a single-offer client sent.
    let mut first_mismatch = None;
    for offer in offers {
        match answers(&offer, &answer) {
            Ok(()) => return Ok(Some(params)),
            Err(why) => {
                first_mismatch.get_or_insert(why);
            }
        }
    }
    Err(invalid(
        first_mismatch.unwrap_or("permessage-deflate response answers no offer"),
    ))
}

/// Whether the response parameters `answer` accept the offer `offer` (RFC 7692 §7.1).
fn answers(offer: &Params, answer: &Params) -> Result<(), &'static str> {
    // §7.1.1.1: a server accepts server_no_context_takeover by including it.
    if offer.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err("permessage-deflate response lacks the server_no_context_takeover offered");
    }
    // §7.1.2.1: accepted by including the same or a smaller value.
    if let Some(asked) = offer.server_max_window_bits {
        match answer.server_max_window_bits {
            None => {
                return Err("permessage-deflate response lacks the server_max_window_bits offered")
            }
            Some(bits) if bits > asked => {
                return Err(
                    "permessage-deflate response has a larger server_max_window_bits than offered",
                )
            }
            Some(_) => {}
        }
    }
    // §7.1.2.2: a response MUST NOT have client_max_window_bits if the offer did not.
    if answer.client_max_window_bits.is_some() && offer.client_max_window_bits.is_none() {
        return Err(
            "permessage-deflate response has client_max_window_bits, which was not offered",
        );
    }
    Ok(())
}

/// The parameters of one permessage-deflate element, offer or response, as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in an offer only, §7.1.2.2).
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// Parse the element's parameters, rejecting what RFC 7692 §5 says to decline (server) or to
    /// fail on (client): an unknown parameter, a repeated one, an invalid value.
    fn parse(element: &ExtensionOffer) -> Result<Self, &'static str> {
        let mut p = Params::default();
        let mut seen = [false; 4];
        for (name, value) in &element.params {
            let (index, duplicate) = match name.as_str() {
                SERVER_NO_CONTEXT_TAKEOVER => (
                    0,
                    "permessage-deflate: duplicate server_no_context_takeover",
                ),
                CLIENT_NO_CONTEXT_TAKEOVER => (
                    1,
                    "permessage-deflate: duplicate client_no_context_takeover",
                ),
                SERVER_MAX_WINDOW_BITS => {
                    (2, "permessage-deflate: duplicate server_max_window_bits")
                }
                CLIENT_MAX_WINDOW_BITS => {
                    (3, "permessage-deflate: duplicate client_max_window_bits")
                }
                _ => return Err("permessage-deflate: unknown parameter"),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(duplicate);
            }
            match index {
                // §7.1.1.1, §7.1.1.2: these two have no value.
                0 => {
                    if value.is_some() {
                        return Err("permessage-deflate: server_no_context_takeover has a value");
                    }
                    p.server_no_context_takeover = true;
                }
                1 => {
                    if value.is_some() {
                        return Err("permessage-deflate: client_no_context_takeover has a value");
                    }
                    p.client_no_context_takeover = true;
                }
                // §7.1.2.1: server_max_window_bits always has a value.
                2 => {
                    let value = value
                        .as_deref()
                        .ok_or("permessage-deflate: server_max_window_bits without a value")?;
                    p.server_max_window_bits = Some(
                        window_bits(value)
                            .ok_or("permessage-deflate: invalid server_max_window_bits")?,
                    );
                }
                // §7.1.2.2: client_max_window_bits may go without a value in an offer.
                _ => {
                    p.client_max_window_bits = Some(match value {
                        None => None,
                        Some(v) => Some(
                            window_bits(v)
                                .ok_or("permessage-deflate: invalid client_max_window_bits")?,
                        ),
                    });
                }
            }
        }
        Ok(p)
    }
}

/// A window-bits value: "a decimal integer value without leading zeroes between 8 to 15,
/// inclusive" (RFC 7692 §7.1.2.1, §7.1.2.2). Quoted values arrive unquoted.
fn window_bits(value: &str) -> Option<u8> {
    let bits = match value {
        "8" => 8,
        "9" => 9,
        "10" => 10,
        "11" => 11,
        "12" => 12,
        "13" => 13,
        "14" => 14,
        "15" => 15,
        _ => return None,
    };
    Some(bits)
}

/// A configured window size brought into 8..=15.
pub(super) fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderMap, HeaderValue};

    use super::*;
    use crate::handshake::parse_extensions;

    /// The elements of a `Sec-WebSocket-Extensions` value, parsed as the handshake does.
    fn elements(value: &str) -> Vec<ExtensionOffer> {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(value).unwrap(),
        );
        parse_extensions(&headers).unwrap()
    }

    fn accept(config: &DeflateConfig, offers: &str) -> Option<(String, DeflateParams)> {
        config
            .accept(&elements(offers))
            .map(|a| (a.response.to_string(), a.params))
    }

    fn params(snct: bool, cnct: bool, smwb: u8, cmwb: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: snct,
            client_no_context_takeover: cnct,
            server_max_window_bits: smwb,
            client_max_window_bits: cmwb,
        }
    }

    fn check(offers: &str, response: &str) -> Result<Option<DeflateParams>, HandshakeError> {
        check_response(&elements(offers), &elements(response))
    }

    fn invalid(why: &'static str) -> HandshakeError {
        HandshakeError::InvalidHeader("Sec-WebSocket-Extensions", why)
    }

    #[test]
    fn default_client_offer_is_what_browsers_send() {
        assert_eq!(
            DeflateConfig::default().offer().to_string(),
            "permessage-deflate; client_max_window_bits"
        );
    }

    #[test]
    fn client_offer_carries_every_configured_parameter() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(3), // clamped to 8
            ..DeflateConfig::default()
        };
        assert_eq!(
            config.offer().to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=8"
        );
    }

    #[test]
    fn server_accepts_a_bare_offer_with_a_bare_response() {
        let got = accept(&DeflateConfig::default(), "permessage-deflate");
        assert_eq!(
            got,
            Some(("permessage-deflate".into(), DeflateParams::default()))
        );
    }

    #[test]
    fn disabled_server_accepts_nothing() {
        assert_eq!(
            accept(&DeflateConfig::disabled(), "permessage-deflate"),
            None
        );
    }

    #[test]
    fn server_ignores_other_extensions_and_matches_the_name_case_insensitively() {
        let got = accept(&DeflateConfig::default(), "x-foo; a=1, Permessage-Deflate");
        assert_eq!(got.map(|g| g.0), Some("permessage-deflate".into()));
        assert_eq!(
            accept(&DeflateConfig::default(), "x-foo, deflate-frame"),
            None
        );
    }

    #[test]
    fn server_honours_the_clients_context_takeover_requests() {
        let got = accept(
            &DeflateConfig::default(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        assert_eq!(
            got,
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
                params(true, true, 15, 15)
            ))
        );
    }

    #[test]
    fn bounded_client_window_answers_browsers_and_firefox() {
        let config = DeflateConfig::bounded_client_window(12);
        // Chromium, Python websockets, Node ws.
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=12".into(),
                params(true, false, 15, 12)
            ))
        );
        // Firefox: the client's window cannot be limited, so no context takeover for it.
        assert_eq!(
            accept(&config, "permessage-deflate"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
                params(true, true, 15, 15)
            ))
        );
        // A smaller window offered is kept; a larger one is brought down.
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits=10").map(|g| g.1),
            Some(params(true, false, 15, 10))
        );
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits=15").map(|g| g.1),
            Some(params(true, false, 15, 12))
        );
        assert_eq!(
            DeflateConfig::bounded_client_window(15).client_max_window_bits,
            Some(13)
        );
    }

    #[test]
    fn server_imposes_its_own_context_takeover_choices() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            accept(&config, "permessage-deflate"),
            Some((
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
                params(true, true, 15, 15)
            ))
        );
    }

    #[test]
    fn server_max_window_bits_is_answered_with_the_same_or_smaller_value() {
        let config = DeflateConfig::default();
        for bits in 8..=15u8 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(
                accept(&config, &offer),
                Some((
                    format!("permessage-deflate; server_max_window_bits={bits}"),
                    params(false, false, bits, 15)
                )),
                "{offer}"
            );
        }
        let config = DeflateConfig {
            server_max_window_bits: Some(10),
            ..DeflateConfig::default()
        };
        assert_eq!(
            accept(&config, "permessage-deflate; server_max_window_bits=12").map(|g| g.1),
            Some(params(false, false, 10, 15))
        );
        assert_eq!(
            accept(&config, "permessage-deflate; server_max_window_bits=9").map(|g| g.1),
            Some(params(false, false, 9, 15))
        );
        // Not asked for: our own limit is announced all the same (§7.1.2.1 "MAY").
        assert_eq!(
            accept(&config, "permessage-deflate"),
            Some((
                "permessage-deflate; server_max_window_bits=10".into(),
                params(false, false, 10, 15)
            ))
        );
    }

    #[test]
    fn quoted_window_bits_are_accepted() {
        // RFC 7692 §7.1.2.1: the value may be sent as a quoted string.
        assert_eq!(
            accept(
                &DeflateConfig::default(),
                "permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=\"9\""
            )
            .map(|g| g.1),
            Some(params(false, false, 10, 9))
        );
    }

    #[test]
    fn client_max_window_bits_is_only_set_when_offered() {
        let config = DeflateConfig {
            client_max_window_bits: Some(10),
            ..DeflateConfig::default()
        };
        // Not offered: the response MUST NOT limit the client (§7.1.2.2).
        assert_eq!(
            accept(&config, "permessage-deflate"),
            Some(("permessage-deflate".into(), params(false, false, 15, 15)))
        );
        // Offered without a value: our limit.
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits"),
            Some((
                "permessage-deflate; client_max_window_bits=10".into(),
                params(false, false, 15, 10)
            ))
        );
        // Offered with a value: the smaller of the two.
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits=12").map(|g| g.0),
            Some("permessage-deflate; client_max_window_bits=10".into())
        );
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits=9").map(|g| g.0),
            Some("permessage-deflate; client_max_window_bits=9".into())
        );
        // No limit of ours: a bare parameter needs no answer, a value is echoed.
        let config = DeflateConfig::default();
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits").map(|g| g.0),
            Some("permessage-deflate".into())
        );
        assert_eq!(
            accept(&config, "permessage-deflate; client_max_window_bits=11").map(|g| g.0),
            Some("permessage-deflate; client_max_window_bits=11".into())
        );
    }

    #[test]
    fn server_declines_invalid_offers_and_takes_the_next() {
        let config = DeflateConfig::default();
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; Server_No_Context_Takeover",
        ] {
            assert_eq!(accept(&config, bad), None, "{bad}");
            // The next, valid, offer is taken instead.
            let two = format!("{bad}, permessage-deflate; client_max_window_bits=12");
            assert_eq!(
                accept(&config, &two),
                Some((
                    "permessage-deflate; client_max_window_bits=12".into(),
                    params(false, false, 15, 12)
                )),
                "{two}"
            );
        }
    }

    #[test]
    fn server_takes_the_first_acceptable_of_several_offers() {
        // The browser-style fallback list: the first valid one wins, not the "best".
        let got = accept(
            &DeflateConfig::default(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits, \
             permessage-deflate; client_max_window_bits, permessage-deflate",
        );
        assert_eq!(
            got,
            Some((
                "permessage-deflate; server_max_window_bits=10".into(),
                params(false, false, 10, 15)
            ))
        );
    }

    #[test]
    fn every_combination_negotiates_the_same_params_on_both_sides() {
        let bits = [None, Some(8), Some(9), Some(12), Some(15)];
        for snct in [false, true] {
            for cnct in [false, true] {
                for smwb in bits {
                    for cmwb in bits {
                        let client = DeflateConfig {
                            server_no_context_takeover: snct,
                            client_no_context_takeover: cnct,
                            server_max_window_bits: smwb,
                            client_max_window_bits: cmwb,
                            ..DeflateConfig::default()
                        };
                        for server in [DeflateConfig::default(), client.clone()] {
                            let offer = client.offer();
                            let accepted = server
                                .accept(std::slice::from_ref(&offer))
                                .expect("every valid offer is acceptable");
                            let checked =
                                check_response(&[offer], std::slice::from_ref(&accepted.response));
                            assert_eq!(
                                checked,
                                Ok(Some(accepted.params)),
                                "{client:?} / {server:?}"
                            );
                            let p = accepted.params;
                            assert_eq!(
                                p.server_no_context_takeover,
                                snct || server.server_no_context_takeover
                            );
                            assert_eq!(
                                p.client_no_context_takeover,
                                cnct || server.client_no_context_takeover
                            );
                            assert_eq!(p.server_max_window_bits, smwb.unwrap_or(15));
                            assert_eq!(p.client_max_window_bits, cmwb.unwrap_or(15));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn client_accepts_a_valid_answer_to_its_offer() {
        assert_eq!(
            check(
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate"
            ),
            Ok(Some(DeflateParams::default()))
        );
        assert_eq!(
            check(
                "permessage-deflate; client_max_window_bits",
                "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10; \
                 server_no_context_takeover; client_no_context_takeover"
            ),
            Ok(Some(params(true, true, 10, 9)))
        );
        assert_eq!(
            check(
                "permessage-deflate; server_max_window_bits=12; server_no_context_takeover",
                "permessage-deflate; server_max_window_bits=10; server_no_context_takeover"
            ),
            Ok(Some(params(true, false, 10, 15)))
        );
    }

    #[test]
    fn client_sees_a_declined_offer_as_no_extension() {
        assert_eq!(check("permessage-deflate", ""), Ok(None));
        assert_eq!(check("permessage-deflate", "x-other"), Ok(None));
    }

    #[test]
    fn client_fails_on_an_unoffered_extension() {
        assert_eq!(
            check("x-other", "permessage-deflate"),
            Err(HandshakeError::UnofferedExtension(
                "permessage-deflate".into()
            ))
        );
    }

    #[test]
    fn client_fails_on_an_invalid_answer() {
        let offer = "permessage-deflate; client_max_window_bits; server_max_window_bits=12";
        for (response, why) in [
            (
                "permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=10",
                "permessage-deflate accepted twice",
            ),
            ("permessage-deflate; server_max_window_bits=10; x=1", "permessage-deflate: unknown parameter"),
            (
                "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
                "permessage-deflate: duplicate server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
                "permessage-deflate: client_max_window_bits without a value",
            ),
            (
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=16",
                "permessage-deflate: invalid client_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=08",
                "permessage-deflate: invalid server_max_window_bits",
            ),
            (
                "permessage-deflate; server_max_window_bits=10; client_no_context_takeover=1",
                "permessage-deflate: client_no_context_takeover has a value",
            ),
            (
                "permessage-deflate",
                "permessage-deflate response lacks the server_max_window_bits offered",
            ),
            (
                "permessage-deflate; server_max_window_bits=13",
                "permessage-deflate response has a larger server_max_window_bits than offered",
            ),
        ] {
            assert_eq!(check(offer, response), Err(invalid(why)), "{response}");
        }
        assert_eq!(
            check(
                "permessage-deflate",
                "permessage-deflate; client_max_window_bits=10"
            ),
            Err(invalid(
                "permessage-deflate response has client_max_window_bits, which was not offered"
            ))
        );
        assert_eq!(
            check(
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate"
            ),
            Err(invalid(
                "permessage-deflate response lacks the server_no_context_takeover offered"
            ))
        );
    }

    #[test]
    fn client_accepts_an_answer_to_any_of_its_offers() {
        let offers = "permessage-deflate; server_no_context_takeover, permessage-deflate";
        assert_eq!(
            check(offers, "permessage-deflate"),
            Ok(Some(DeflateParams::default()))
        );
    }

    #[test]
    fn client_may_be_told_to_drop_context_takeover_or_limit_the_server_window_unasked() {
        // §7.1.1.1 and §7.1.2.1: a server may add these to any response.
        assert_eq!(
            check(
                "permessage-deflate",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=9"
            ),
            Ok(Some(params(true, false, 9, 15)))
        );
    }

    #[test]
    fn response_params_default_to_full_windows_and_takeover() {
        let element = &elements("permessage-deflate")[0];
        assert_eq!(
            DeflateParams::from_response(element),
            Ok(DeflateParams::default())
        );
        let element = &elements("permessage-deflate; client_max_window_bits")[0];
        assert_eq!(
            DeflateParams::from_response(element),
            Err("permessage-deflate: client_max_window_bits without a value")
        );
    }

    #[test]
    fn handshake_error_names_the_fault() {
        let err = check(
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits=10",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid Sec-WebSocket-Extensions header: permessage-deflate response has \
             client_max_window_bits, which was not offered"
        );
    }
}
