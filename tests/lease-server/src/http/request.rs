//! What the handlers share: the request context, the reply, the client-fault
//! marker, and the partition gate in front of the API.

use std::net::IpAddr;
use std::sync::Arc;

use http::Response;
use serde_json::{Value, json};

use super::{Body, ConnCtx};
use crate::faults::PartitionMode;
use crate::status::ApiError;
use crate::{Shared, Verb};

/// What a handler answers.
pub(super) enum Reply {
    Json(u16, Value, Vec<String>),
    Raw(Response<Body>),
    /// Close the connection without answering.
    Drop,
}

/// Client-fault errors carry a private marker until they are answered.
pub(super) const CLIENT_FAULT_MARKER: &str = "x-vip-lab-client-fault";

pub(super) fn is_client_fault(v: &Value) -> bool {
    v.get(CLIENT_FAULT_MARKER).is_some()
}

pub(super) fn strip_marker(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(CLIENT_FAULT_MARKER);
    }
    v
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        let mut v = e.to_json();
        if e.client_fault {
            v[CLIENT_FAULT_MARKER] = json!(true);
        }
        Reply::Json(e.code, v, Vec::new())
    }
}

/// Waits out a partition of this client. Returns whether the request may proceed.
pub(super) async fn partition_gate(shared: &Shared, identity: Option<&str>, ip: IpAddr) -> bool {
    let mut rx = shared.faults.subscribe();
    let mode = rx.borrow_and_update().partition_for(identity, ip);
    match mode {
        None => true,
        Some(PartitionMode::Refuse) => false,
        Some(mode) => {
            tracing::debug!(?identity, %ip, ?mode, "request held by a partition");
            let healed = rx
                .wait_for(|f| f.partition_for(identity, ip).is_none())
                .await
                .is_ok();
            healed && mode == PartitionMode::Hang
        }
    }
}

pub(super) struct ReqCtx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) ctx: &'a Arc<ConnCtx>,
    pub(super) identity: Option<&'a str>,
    pub(super) ip: IpAddr,
    pub(super) verb: Verb,
}
