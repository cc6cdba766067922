//! The request/response part of the contract: create, get, replace with and
//! without a current resourceVersion, list, delete; invalid objects; the
//! microsecond times of the spec.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use kube::api::{DeleteParams, GetParams, ListParams, PostParams};
use kube::core::Request;
use serde_json::{Value, json};

use super::{Ctx, Recorder, rv_of};

/// A Lease as vip-agent writes it.
pub(crate) fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(jiff::Timestamp::now())),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
}

/// create, 409 on a second create, get, 404, replace (current, unchanged,
/// stale, without resourceVersion, missing), list, delete.
pub(crate) async fn crud(c: &Ctx, r: &mut Recorder) {
    const NAME: &str = "contract-crud";
    let pp = PostParams::default();

    r.begin("create");
    let Some(created) = r.ok("create", c.api.create(&pp, &lease(NAME, "n0")).await) else {
        return;
    };
    r.observe("namespace", &created.metadata.namespace);
    r.observe("holder", holder(&created));
    r.observe("has_uid", created.metadata.uid.is_some());
    r.observe(
        "has_creation_timestamp",
        created.metadata.creation_timestamp.is_some(),
    );
    r.expect(rv_of(&created) > 0, "a numeric resourceVersion");
    r.expect_eq(
        "namespace",
        created.metadata.namespace.as_deref(),
        Some(c.ns.as_str()),
    );

    r.begin("create_existing");
    let s = r.api_error("second create", c.api.create(&pp, &lease(NAME, "n1")).await);
    r.expect_status(s.as_ref(), 409, "AlreadyExists");

    r.begin("get");
    if let Some(got) = r.ok("get", c.api.get(NAME).await) {
        r.observe("equals_created", got == created);
        r.expect(got == created, "get returns what create returned");
    }

    r.begin("get_missing");
    let s = r.api_error(
        "get of a missing Lease",
        c.api.get("contract-missing").await,
    );
    r.expect_status(s.as_ref(), 404, "NotFound");

    r.begin("replace_current");
    let mut next = created.clone();
    if let Some(spec) = next.spec.as_mut() {
        spec.holder_identity = Some("n1".into());
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
    }
    let Some(updated) = r.ok("replace", c.api.replace(NAME, &pp, &next).await) else {
        return;
    };
    let increased = rv_of(&updated) > rv_of(&created);
    r.observe("rv_increased", increased);
    r.observe("holder", holder(&updated));
    r.observe("uid_kept", updated.metadata.uid == created.metadata.uid);
    r.observe(
        "creation_timestamp_kept",
        updated.metadata.creation_timestamp == created.metadata.creation_timestamp,
    );
    r.expect(increased, "the resourceVersion moves forward");
    r.expect_eq("holder", holder(&updated), Some("n1"));

    r.begin("replace_unchanged");
    if let Some(same) = r.ok(
        "replace unchanged",
        c.api.replace(NAME, &pp, &updated).await,
    ) {
        r.observe("rv_unchanged", rv_of(&same) == rv_of(&updated));
        r.expect_eq("resourceVersion", rv_of(&same), rv_of(&updated));
    }

    r.begin("replace_stale");
    let s = r.api_error(
        "replace with a stale resourceVersion",
        c.api.replace(NAME, &pp, &next).await,
    );
    r.expect_status(s.as_ref(), 409, "Conflict");
    if let Some(after) = r.ok("get after the conflict", c.api.get(NAME).await) {
        r.observe("unchanged", after == updated);
        r.expect(after == updated, "a conflict changes nothing");
    }

    r.begin("replace_without_rv");
    let mut blind = updated.clone();
    blind.metadata.resource_version = None;
    let s = r.api_error(
        "replace without a resourceVersion",
        c.api.replace(NAME, &pp, &blind).await,
    );
    r.expect_status(s.as_ref(), 422, "Invalid");

    r.begin("replace_missing");
    // Leases allow create-on-update: a PUT of a missing Lease creates it.
    const PUT: &str = "contract-put";
    if let Some(put) = r.ok(
        "replace of a missing Lease",
        c.api.replace(PUT, &pp, &lease(PUT, "n2")).await,
    ) {
        r.observe("created", c.api.get(PUT).await.is_ok_and(|l| l == put));
        r.ok(
            "delete it",
            c.api.delete(PUT, &DeleteParams::default()).await,
        );
    }

    r.begin("list");
    let lp = ListParams::default().fields(&format!("metadata.name={NAME}"));
    if let Some(list) = r.ok("list", c.api.list(&lp).await) {
        let names: Vec<_> = list.items.iter().map(|l| l.metadata.name.clone()).collect();
        r.observe("names", &names);
        r.observe("item_is_current", list.items.first() == Some(&updated));
        let list_rv: u64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        r.observe("list_rv_not_older", list_rv >= rv_of(&updated));
        r.expect_eq("names", names, vec![Some(NAME.to_owned())]);
    }

    r.begin("delete");
    if let Some(answer) = r.ok("delete", c.api.delete(NAME, &DeleteParams::default()).await) {
        // kube-apiserver answers a Status for Leases (no ReturnDeletedObject).
        r.observe("answer", if answer.is_right() { "Status" } else { "Lease" });
        if let Some(status) = answer.right() {
            r.observe("status", super::status_json(&status));
            let uid = status.details.as_ref().map(|d| d.uid.clone());
            r.expect_eq("details.uid", uid, updated.metadata.uid.clone());
        } else {
            r.expect(false, "a Status, not the object");
        }
    }
    let s = r.api_error("get after delete", c.api.get(NAME).await);
    r.expect_status(s.as_ref(), 404, "NotFound");

    r.begin("delete_missing");
    let s = r.api_error(
        "delete of a missing Lease",
        c.api.delete(NAME, &DeleteParams::default()).await,
    );
    r.expect_status(s.as_ref(), 404, "NotFound");
}

/// Objects the server must refuse: 422 Invalid with the causes, and a create
/// that carries a resourceVersion.
pub(crate) async fn invalid(c: &Ctx, r: &mut Recorder) {
    let pp = PostParams::default();

    r.begin("invalid_duration");
    let mut l = lease("contract-invalid", "n0");
    if let Some(s) = l.spec.as_mut() {
        s.lease_duration_seconds = Some(-1);
    }
    let s = r.api_error("negative leaseDurationSeconds", c.api.create(&pp, &l).await);
    r.expect_status(s.as_ref(), 422, "Invalid");

    r.begin("invalid_transitions");
    let mut l = lease("contract-invalid", "n0");
    if let Some(s) = l.spec.as_mut() {
        s.lease_transitions = Some(-1);
    }
    let s = r.api_error("negative leaseTransitions", c.api.create(&pp, &l).await);
    r.expect_status(s.as_ref(), 422, "Invalid");

    r.begin("invalid_name");
    let s = r.api_error(
        "a name that is no DNS subdomain",
        c.api.create(&pp, &lease("Contract_Bad", "n0")).await,
    );
    r.expect_status(s.as_ref(), 422, "Invalid");

    // A plain storage error, which kube-apiserver answers without a reason.
    r.begin("create_with_rv");
    let mut l = lease("contract-rv", "n0");
    l.metadata.resource_version = Some("5".into());
    let s = r.api_error("create with a resourceVersion", c.api.create(&pp, &l).await);
    r.expect_status(s.as_ref(), 500, "");
}

/// acquireTime and renewTime are MicroTimes: microseconds survive a round
/// trip, and the server writes them in UTC with exactly six digits.
pub(crate) async fn micro_time(c: &Ctx, r: &mut Recorder) {
    const NAME: &str = "contract-time";
    r.begin("micro_time");
    let url = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", c.ns);
    let raw = Request::new(&url);
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME},
        "spec": {
            "holderIdentity": "n0",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-02T03:04:05.123456Z",
            "renewTime": "2026-01-02T05:04:05.000001+02:00",
        },
    });
    let req = raw.create(
        &PostParams::default(),
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    let Some(req) = r.ok("request", req) else {
        return;
    };
    let Some(text) = r.ok("raw create", c.client.request_text(req).await) else {
        return;
    };
    let times = |text: &str| {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        (
            v.pointer("/spec/acquireTime").cloned(),
            v.pointer("/spec/renewTime").cloned(),
        )
    };
    let created = times(&text);
    r.observe("created", &created);
    let want = (
        Some(json!("2026-01-02T03:04:05.123456Z")),
        Some(json!("2026-01-02T03:04:05.000001Z")),
    );
    r.expect_eq("times as created", created, want.clone());
    let get = raw.get(NAME, &GetParams::default());
    if let Some(get) = r.ok("request", get)
        && let Some(text) = r.ok("raw get", c.client.request_text(get).await)
    {
        r.observe("read", times(&text));
        r.expect_eq("times as read", times(&text), want);
    }

    // Through the typed client (which writes six digits): nanoseconds are cut.
    let Some(mut typed) = r.ok("get", c.api.get(NAME).await) else {
        return;
    };
    let t = jiff::Timestamp::new(1_780_000_000, 123_456_789).unwrap_or_default();
    if let Some(s) = typed.spec.as_mut() {
        s.renew_time = Some(MicroTime(t));
    }
    if let Some(back) = r.ok(
        "replace",
        c.api.replace(NAME, &PostParams::default(), &typed).await,
    ) {
        let got = back.spec.and_then(|s| s.renew_time).map(|m| m.0);
        let micros = jiff::Timestamp::new(1_780_000_000, 123_456_000).unwrap_or_default();
        r.observe("typed_micro_precision", got == Some(micros));
        r.expect_eq("renewTime", got, Some(micros));
    }
    r.ok("delete", c.api.delete(NAME, &DeleteParams::default()).await);
}
