//! The writing verbs: create, update, patch, delete (and get).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use serde_json::{Value, json};

use super::decode::{FieldValidation, decode_lease};
use super::request::Reply;
use crate::status::{ApiError, OPTIMISTIC_LOCK, QUALIFIED, delete_success};
use crate::store::{EventType, with_type_meta};
use crate::validate::{dns1123_subdomain, lease_spec_errors, merge_patch, parse_rv};
use crate::{Shared, lock, random_u64};

/// Sets what the server owns on a new object: uid and creationTimestamp.
pub(crate) fn init_new_meta(lease: &mut Lease) {
    let r1 = random_u64();
    let r2 = random_u64();
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        r1 >> 32,
        (r1 >> 16) & 0xffff,
        r1 & 0xfff,
        ((r2 >> 48) & 0x3fff) | 0x8000,
        r2 & 0xffff_ffff_ffff
    );
    let m = &mut lease.metadata;
    m.uid = Some(uid);
    m.resource_version = None;
    m.self_link = None;
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    let now = jiff::Timestamp::now();
    m.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    ));
}

pub(super) fn meta_name_errors(lease: &Lease) -> Vec<(String, &'static str, String)> {
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return vec![(
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        )];
    }
    match dns1123_subdomain(name) {
        Ok(()) => Vec::new(),
        Err(msg) => vec![(
            "metadata.name".into(),
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": {msg}"),
        )],
    }
}

pub(super) fn invalid_lease(name: &str, causes: &[(String, &'static str, String)]) -> ApiError {
    ApiError::invalid(
        "Lease.coordination.k8s.io",
        "Lease",
        "coordination.k8s.io",
        name,
        causes,
    )
}

pub(super) fn check_namespace(lease: &mut Lease, ns: &str) -> Result<(), ApiError> {
    match lease.metadata.namespace.as_deref() {
        Some(n) if !n.is_empty() && n != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            lease.metadata.namespace = Some(ns.to_owned());
            Ok(())
        }
    }
}

pub(super) fn create(
    shared: &Shared,
    ns: &str,
    v: Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    let (mut lease, warnings) = decode_lease(v, fv)?;
    check_namespace(&mut lease, ns)?;
    if lease.metadata.name.as_deref().is_none_or(str::is_empty)
        && let Some(prefix) = lease
            .metadata
            .generate_name
            .as_deref()
            .filter(|p| !p.is_empty())
    {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String = (0..5)
            .map(|_| ALPHABET[(random_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect();
        lease.metadata.name = Some(format!("{prefix}{suffix}"));
    }
    let name = lease.metadata.name.clone().unwrap_or_default();
    let mut causes = meta_name_errors(&lease);
    causes.extend(lease_spec_errors(&lease));
    if !causes.is_empty() {
        return Err(invalid_lease(&name, &causes));
    }
    if lease
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        // kube-apiserver's storage returns a plain Go error here, which it
        // answers as a 500 Status without reason or details.
        return Err(ApiError::unstructured(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut store = lock(&shared.store);
    if store.get(ns, &name).is_some() {
        return Err(ApiError::already_exists(&name));
    }
    init_new_meta(&mut lease);
    let stored = if dry_run {
        lease
    } else {
        store.commit(lease, EventType::Added)
    };
    Ok(Reply::Json(201, with_type_meta(&stored), warnings))
}

pub(super) fn body_rv(lease: &Lease) -> Result<u64, ApiError> {
    match lease.metadata.resource_version.as_deref() {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion: Invalid value: {s:?}: must be a valid resource version"
            ))
        }),
    }
}

/// The optimistic-concurrency part of an update of `old` by `new` (PUT and PATCH).
pub(super) fn check_update(name: &str, old: &Lease, new: &Lease) -> Result<(), ApiError> {
    let new_rv = body_rv(new)?;
    if let Some(uid) = new.metadata.uid.as_deref().filter(|u| !u.is_empty())
        && Some(uid) != old.metadata.uid.as_deref()
    {
        return Err(ApiError::conflict(
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.metadata.uid.as_deref().unwrap_or_default()
            ),
        ));
    }
    if new_rv == 0 {
        return Err(ApiError::invalid(
            QUALIFIED,
            "leases",
            "coordination.k8s.io",
            name,
            &[(
                "metadata.resourceVersion".into(),
                "FieldValueInvalid",
                "Invalid value: 0: must be specified for an update".into(),
            )],
        ));
    }
    if Some(new_rv.to_string().as_str()) != old.metadata.resource_version.as_deref() {
        return Err(ApiError::conflict(name, OPTIMISTIC_LOCK));
    }
    Ok(())
}

/// Commits `new` over `old` (already checked), keeping server-owned metadata; a no-op update
/// is not written (no new resourceVersion, no event), as etcd3 storage does.
pub(super) fn commit_update(
    store: &mut crate::store::Store,
    old: &Lease,
    mut new: Lease,
    dry_run: bool,
) -> Result<Lease, ApiError> {
    new.metadata.uid = old.metadata.uid.clone();
    new.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
    new.metadata.resource_version = old.metadata.resource_version.clone();
    new.metadata.self_link = None;
    let causes = lease_spec_errors(&new);
    if !causes.is_empty() {
        return Err(invalid_lease(
            new.metadata.name.as_deref().unwrap_or_default(),
            &causes,
        ));
    }
    if &new == old || dry_run {
        return Ok(new);
    }
    Ok(store.commit(new, EventType::Modified))
}

pub(super) fn update(
    shared: &Shared,
    ns: &str,
    name: &str,
    v: Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    let (mut lease, warnings) = decode_lease(v, fv)?;
    let body_name = lease.metadata.name.clone().unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(&mut lease, ns)?;
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        // Leases allow create-on-update (AllowCreateOnUpdate() == true).
        let mut causes = meta_name_errors(&lease);
        causes.extend(lease_spec_errors(&lease));
        if !causes.is_empty() {
            return Err(invalid_lease(name, &causes));
        }
        init_new_meta(&mut lease);
        let stored = if dry_run {
            lease
        } else {
            store.commit(lease, EventType::Added)
        };
        return Ok(Reply::Json(201, with_type_meta(&stored), warnings));
    };
    check_update(name, &old, &lease)?;
    let stored = commit_update(&mut store, &old, lease, dry_run)?;
    Ok(Reply::Json(200, with_type_meta(&stored), warnings))
}

pub(super) fn patch(
    shared: &Shared,
    ns: &str,
    name: &str,
    p: &Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    if !p.is_object() {
        return Err(ApiError::bad_request("the patch is not a JSON object"));
    }
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        return Err(ApiError::not_found(name));
    };
    let mut merged = with_type_meta(&old);
    let has_rv = p
        .pointer("/metadata/resourceVersion")
        .is_some_and(|v| !v.is_null());
    merge_patch(&mut merged, p);
    if !has_rv {
        // A patch without a resourceVersion applies to whatever is current.
        merged["metadata"]["resourceVersion"] = json!(old.metadata.resource_version);
    }
    let (lease, warnings) = decode_lease(merged, fv)?;
    if lease.metadata.name.as_deref() != Some(name)
        || lease.metadata.namespace.as_deref() != Some(ns)
    {
        return Err(invalid_lease(
            name,
            &[(
                "metadata.name".into(),
                "FieldValueInvalid",
                "Invalid value: field is immutable".into(),
            )],
        ));
    }
    check_update(name, &old, &lease)?;
    let stored = commit_update(&mut store, &old, lease, dry_run)?;
    Ok(Reply::Json(200, with_type_meta(&stored), warnings))
}

pub(super) fn delete(
    shared: &Shared,
    ns: &str,
    name: &str,
    opts: Option<&Value>,
    dry_run: bool,
) -> Result<Reply, ApiError> {
    let mut dry_run = dry_run;
    let (mut pre_uid, mut pre_rv) = (None, None);
    if let Some(o) = opts {
        if !o.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        if let Some(kind) = o.get("kind").and_then(Value::as_str)
            && kind != "DeleteOptions"
        {
            return Err(ApiError::bad_request(format!(
                "no kind \"{kind}\" is registered for DeleteOptions"
            )));
        }
        if let Some(p) = o.get("propagationPolicy").and_then(Value::as_str)
            && !matches!(p, "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "DeleteOptions.meta.k8s.io",
                "DeleteOptions",
                "meta.k8s.io",
                "",
                &[(
                    "propagationPolicy".into(),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
        match o.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.iter().all(|x| x == "All") => dry_run |= !a.is_empty(),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other}"
                )));
            }
        }
        pre_uid = o
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        pre_rv = o
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        return Err(ApiError::not_found(name));
    };
    let uid = old.metadata.uid.clone().unwrap_or_default();
    if let Some(want) = pre_uid
        && want != uid
    {
        return Err(ApiError::conflict(
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    let cur_rv = old.metadata.resource_version.clone().unwrap_or_default();
    if let Some(want) = pre_rv
        && want != cur_rv
    {
        return Err(ApiError::conflict(
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {cur_rv}"
            ),
        ));
    }
    if !dry_run {
        store.commit(old, EventType::Deleted);
    }
    Ok(Reply::Json(200, delete_success(name, &uid), Vec::new()))
}

pub(super) fn get(
    shared: &Shared,
    ns: &str,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    parse_rv(q.get("resourceVersion"))?;
    let store = lock(&shared.store);
    match store.get(ns, name) {
        Some(l) => Ok(Reply::Json(200, with_type_meta(l), Vec::new())),
        None => Err(ApiError::not_found(name)),
    }
}
