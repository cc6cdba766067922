//! The fast-path membership in the Lease record: the annotation
//! [`ANNOTATION`], written only in the same CAS as the holder it names
//! (docs/peer-promises.md, rule 3: membership changes only by CAS).
//!
//! `{"holder": "<id>", "members": {"<id>": "<ip>:<port>", ...}}`; a release
//! writes `{"holder": "", "releasedBy": "<id>", "members": {}}`.
//!
//! The annotation counts only while its `holder` equals the Lease's
//! `holderIdentity`. A writer that does not know the fast path (the agent
//! with the fast path off, an older agent, a human) leaves the annotation as
//! it was when it takes the Lease, so the names differ and no member takes
//! over fast from a holder that never sent heartbeats.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};

pub const ANNOTATION: &str = "vip-agent.io/peers";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peers {
    pub holder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    #[serde(default)]
    pub members: BTreeMap<String, SocketAddr>,
}

/// The Lease's holder (empty: none), as election::lease reads it (not
/// imported: the election depends on this module, not the other way).
fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The annotation as written (whatever holder it names); `None` when absent
/// or unreadable (then nobody takes the fast path on this record).
pub fn read(lease: &Lease) -> Option<Peers> {
    let raw = lease.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    serde_json::from_str(raw).ok()
}

/// The fast-path members of `lease`, when its holder is a fast-path leader
/// (the annotation names the Lease's holder); `None` otherwise.
pub fn members(lease: &Lease) -> Option<BTreeMap<String, SocketAddr>> {
    let p = read(lease)?;
    (holder(lease) == Some(p.holder.as_str())).then_some(p.members)
}

/// Who released `lease` through the fast path (holder empty, `releasedBy` set).
pub fn released_by(lease: &Lease) -> Option<String> {
    if holder(lease).is_some() {
        return None;
    }
    read(lease)?.released_by
}

/// Write `peers` into `lease`'s annotation.
pub fn write(lease: &mut Lease, peers: &Peers) {
    let v = serde_json::to_string(peers).expect("a map of strings serializes");
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION.to_owned(), v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;

    fn lease(holder: &str) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn members_count_only_under_the_holder_that_wrote_them() {
        let mut l = lease("a");
        assert_eq!(members(&l), None, "no annotation: no fast path");
        let p = Peers {
            holder: "a".into(),
            released_by: None,
            members: [("a".to_owned(), "10.0.0.1:7473".parse().expect("addr"))]
                .into_iter()
                .collect(),
        };
        write(&mut l, &p);
        assert_eq!(read(&l), Some(p.clone()));
        assert_eq!(members(&l).map(|m| m.len()), Some(1));
        // A writer that does not know the annotation takes the Lease.
        l.spec.as_mut().expect("spec").holder_identity = Some("b".into());
        assert_eq!(members(&l), None);
        // Released through the fast path.
        let mut r = lease("");
        write(
            &mut r,
            &Peers {
                holder: String::new(),
                released_by: Some("a".into()),
                members: BTreeMap::new(),
            },
        );
        assert_eq!(released_by(&r).as_deref(), Some("a"));
        assert_eq!(released_by(&l), None);
    }

    #[test]
    fn garbage_is_no_fast_path() {
        let mut l = lease("a");
        l.metadata.annotations = Some(
            [(ANNOTATION.to_owned(), "{not json".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(members(&l), None);
    }
}
