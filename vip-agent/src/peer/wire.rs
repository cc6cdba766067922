//! The agents' peer messages on the wire (docs/peer-promises.md, "Messages"):
//! a small fixed layout, authenticated with HMAC-SHA256 (`ring`) under the
//! shared peer key. Decoding checks the length and the MAC before reading
//! anything else, never panics, and never allocates more than the datagram.
//!
//! Layout (big-endian):
//! `"VIPP" | version 1 | kind | seq u64 | sender (u8 len + bytes) | body | mac[32]`
//! - Heartbeat body: `holder | resourceVersion | t_n u64`
//! - Ack body: `holder | resourceVersion | n u64 | t_n u64`
//! - Hello body: `address` (the sender's `ip:port`, as text)
//!
//! Strings are at most 253 bytes (a node name is a DNS subdomain).

use std::net::SocketAddr;

use ring::hmac;

const MAGIC: &[u8; 4] = b"VIPP";
const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longest string field (a Kubernetes node name, a resourceVersion).
pub const MAX_STR: usize = 253;
/// Longest datagram: the header, four strings at most and the MAC.
pub const MAX_DATAGRAM: usize = 4 + 2 + 8 + 4 * (1 + MAX_STR) + 16 + MAC_LEN;

/// The peer key: at least [`MIN_KEY_LEN`] bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short, bad magic or version, a field out of bounds, bad UTF-8.
    #[error("malformed peer message")]
    Malformed,
    /// The MAC does not verify under our key (forged, corrupted, or another key).
    #[error("peer message fails authentication")]
    Mac,
}

/// Message kinds (also the replay window's second key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Heartbeat = 1,
    Ack = 2,
    Hello = 3,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Ack => "ack",
            Kind::Hello => "hello",
        }
    }
}

/// A decoded (and authenticated) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender's sequence number: strictly increasing per sender and kind.
    pub seq: u64,
    /// Sender's identity (its node name in the Lease).
    pub sender: String,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The leader's heartbeat `n` (= the message's seq), sent at `t_n` on its clock.
    Heartbeat {
        holder: String,
        resource_version: String,
        t_n: u64,
    },
    /// A promise made on heartbeat `n` sent at `t_n` (both echoed).
    Ack {
        holder: String,
        resource_version: String,
        n: u64,
        t_n: u64,
    },
    /// "Heartbeat me, I want to be a member": sent to the holder by an agent
    /// the record does not list.
    Hello { address: SocketAddr },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Heartbeat { .. } => Kind::Heartbeat,
            Body::Ack { .. } => Kind::Ack,
            Body::Hello { .. } => Kind::Hello,
        }
    }

    /// The datagram: the fields and their MAC under `key`. Strings longer than
    /// [`MAX_STR`] are a caller bug and truncated (the receiver then rejects
    /// the message as from an unknown sender, never crashes).
    pub fn encode(&self, key: &hmac::Key) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(self.kind() as u8);
        b.extend_from_slice(&self.seq.to_be_bytes());
        put_str(&mut b, &self.sender);
        match &self.body {
            Body::Heartbeat {
                holder,
                resource_version,
                t_n,
            } => {
                put_str(&mut b, holder);
                put_str(&mut b, resource_version);
                b.extend_from_slice(&t_n.to_be_bytes());
            }
            Body::Ack {
                holder,
                resource_version,
                n,
                t_n,
            } => {
                put_str(&mut b, holder);
                put_str(&mut b, resource_version);
                b.extend_from_slice(&n.to_be_bytes());
                b.extend_from_slice(&t_n.to_be_bytes());
            }
            Body::Hello { address } => put_str(&mut b, &address.to_string()),
        }
        let tag = hmac::sign(key, &b);
        b.extend_from_slice(tag.as_ref());
        b
    }

    /// Authenticate and parse a datagram.
    pub fn decode(datagram: &[u8], key: &hmac::Key) -> Result<Message, WireError> {
        if datagram.len() < 4 + 2 + 8 + 1 + MAC_LEN || datagram.len() > MAX_DATAGRAM {
            return Err(WireError::Malformed);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        if &signed[..4] != MAGIC || signed[4] != VERSION {
            return Err(WireError::Malformed);
        }
        hmac::verify(key, signed, tag).map_err(|_| WireError::Mac)?;
        let mut r = Reader(&signed[5..]);
        let kind = r.u8()?;
        let seq = r.u64()?;
        let sender = r.str()?;
        let body = match kind {
            1 => Body::Heartbeat {
                holder: r.str()?,
                resource_version: r.str()?,
                t_n: r.u64()?,
            },
            2 => Body::Ack {
                holder: r.str()?,
                resource_version: r.str()?,
                n: r.u64()?,
                t_n: r.u64()?,
            },
            3 => Body::Hello {
                address: r.str()?.parse().map_err(|_| WireError::Malformed)?,
            },
            _ => return Err(WireError::Malformed),
        };
        if !r.0.is_empty() || sender.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(Message { seq, sender, body })
    }
}

/// The HMAC key of `secret` (checked: at least [`MIN_KEY_LEN`] bytes).
pub fn key(secret: &[u8]) -> Option<hmac::Key> {
    (secret.len() >= MIN_KEY_LEN).then(|| hmac::Key::new(hmac::HMAC_SHA256, secret))
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STR);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.push(end as u8);
    b.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> hmac::Key {
        key(&[b; 32]).expect("32 bytes")
    }

    fn samples() -> Vec<Message> {
        vec![
            Message {
                seq: 7,
                sender: "node-a".into(),
                body: Body::Heartbeat {
                    holder: "node-a".into(),
                    resource_version: "12345".into(),
                    t_n: 99,
                },
            },
            Message {
                seq: u64::MAX,
                sender: "node-b".into(),
                body: Body::Ack {
                    holder: "node-a".into(),
                    resource_version: "".into(),
                    n: 7,
                    t_n: 99,
                },
            },
            Message {
                seq: 1,
                sender: "node-c".into(),
                body: Body::Hello {
                    address: "[fd00::3]:7473".parse().expect("addr"),
                },
            },
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let d = m.encode(&k(1));
            assert!(d.len() <= MAX_DATAGRAM);
            assert_eq!(Message::decode(&d, &k(1)), Ok(m));
        }
    }

    #[test]
    fn another_key_or_any_flipped_bit_is_rejected() {
        for m in samples() {
            let d = m.encode(&k(1));
            assert_eq!(Message::decode(&d, &k(2)), Err(WireError::Mac));
            for i in 0..d.len() {
                for bit in 0..8 {
                    let mut e = d.clone();
                    e[i] ^= 1 << bit;
                    assert!(Message::decode(&e, &k(1)).is_err(), "byte {i} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn truncated_or_padded_datagrams_are_malformed_or_unauthentic() {
        for m in samples() {
            let d = m.encode(&k(1));
            for n in 0..d.len() {
                assert!(Message::decode(&d[..n], &k(1)).is_err());
            }
            let mut longer = d.clone();
            longer.push(0);
            assert!(Message::decode(&longer, &k(1)).is_err());
        }
    }

    #[test]
    fn a_valid_mac_over_garbage_is_malformed_not_a_panic() {
        // Authenticated but nonsense: bad kind, lengths past the end, bad UTF-8.
        for body in [
            vec![9u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'a'],
            vec![1u8, 0, 0, 0, 0, 0, 0, 0, 1, 200, b'a'],
            vec![1u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xff],
            vec![3u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'a', 3, b'x', b':', b'1'],
        ] {
            let mut d = MAGIC.to_vec();
            d.push(VERSION);
            d.extend_from_slice(&body);
            let tag = hmac::sign(&k(1), &d);
            d.extend_from_slice(tag.as_ref());
            assert_eq!(Message::decode(&d, &k(1)), Err(WireError::Malformed));
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(key(&[0; 31]).is_none());
        assert!(key(&[0; 32]).is_some());
    }
}
