//! The reading verbs over collections: list and watch (bookmarks, the
//! watch task).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::CONTENT_TYPE;
use k8s_openapi::Resource as _;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::request::{Reply, ReqCtx, partition_gate};
use super::{Body, ConnCtx, DEFAULT_WATCH_TIMEOUT};
use crate::status::ApiError;
use crate::store::{StoreEvent, watch_line, with_type_meta};
use crate::validate::{FieldSelector, LabelSelector, parse_bool, parse_rv};
use crate::{Shared, lock};

/// A `ListOptions` validation error (422, as kube-apiserver's `ValidateListOptions`).
pub(super) fn invalid_list_options(field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "ListOptions.meta.k8s.io",
        "ListOptions",
        "meta.k8s.io",
        "",
        &[(
            field.to_owned(),
            "FieldValueForbidden",
            format!("Forbidden: {msg}"),
        )],
    )
}

pub(super) struct Filter {
    ns: Option<String>,
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    pub(super) fn new(ns: Option<String>, q: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            ns,
            fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))?,
            labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        })
    }

    pub(super) fn matches(&self, lease: &Lease) -> bool {
        let ns = lease.metadata.namespace.as_deref().unwrap_or_default();
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        self.ns.as_deref().is_none_or(|want| want == ns)
            && self.fields.matches(ns, name)
            && self.labels.matches(lease.metadata.labels.as_ref())
    }
}

pub(super) fn list(
    shared: &Shared,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let rv = parse_rv(q.get("resourceVersion"))?;
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    if let Some(limit) = q.get("limit")
        && limit.parse::<i64>().is_err()
    {
        return Err(ApiError::bad_request(format!("invalid limit {limit:?}")));
    }
    if q.get("sendInitialEvents").is_some() {
        return Err(invalid_list_options(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    match (rv_match, rv) {
        ("", _) => {}
        (_, None) => {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        ("Exact", Some(0)) => {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        ("Exact" | "NotOlderThan", _) => {}
        (other, _) => {
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "ListOptions",
                "meta.k8s.io",
                "",
                &[(
                    "resourceVersionMatch".into(),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\", \"\""
                    ),
                )],
            ));
        }
    }
    let filter = Filter::new(ns.map(str::to_owned), q)?;
    let store = lock(&shared.store);
    let current = store.rv();
    if let Some(want) = rv.filter(|r| *r > 0) {
        if want > current {
            return Err(ApiError::injected(504).with_message(format!(
                "Too large resource version: {want}, current: {current}"
            )));
        }
        if rv_match == "Exact" && want != current {
            return Err(ApiError::gone(
                "The resourceVersion for the provided list is too old.",
            ));
        }
    }
    let items: Vec<Value> = store
        .list(ns)
        .filter(|l| filter.matches(l))
        .map(|l| serde_json::to_value(l).expect("a Lease always serializes"))
        .collect();
    Ok(Reply::Json(
        200,
        json!({
            "kind": "LeaseList",
            "apiVersion": Lease::API_VERSION,
            "metadata": {"resourceVersion": current.to_string()},
            "items": items,
        }),
        Vec::new(),
    ))
}

impl ApiError {
    pub(super) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

pub(super) fn bookmark_line(rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": Lease::KIND, "apiVersion": Lease::API_VERSION, "metadata": meta, "spec": {}}),
    )
}

pub(super) fn watch(
    rc: &ReqCtx<'_>,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let rv = parse_rv(q.get("resourceVersion"))?;
    let bookmarks = match q.get("allowWatchBookmarks") {
        Some(v) => parse_bool("allowWatchBookmarks", v)?,
        None => false,
    };
    let send_initial = match q.get("sendInitialEvents") {
        Some(v) => Some(parse_bool("sendInitialEvents", v)?),
        None => None,
    };
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    if send_initial.is_some() {
        if !bookmarks && send_initial == Some(true) {
            return Err(invalid_list_options(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        if rv_match != "NotOlderThan" {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    } else if !rv_match.is_empty() {
        return Err(invalid_list_options(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let filter = Filter::new(ns, q)?;
    let initial_state = send_initial.unwrap_or(matches!(rv, None | Some(0)));

    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let (rx, start_rv) = {
        let store = lock(&rc.shared.store);
        if initial_state {
            initial.extend(
                store
                    .list(filter.ns.as_deref())
                    .filter(|l| filter.matches(l))
                    .map(|l| watch_line("ADDED", &with_type_meta(l))),
            );
        } else if let Some(after) = rv {
            if after < store.compacted() {
                let e = ApiError::gone(format!(
                    "too old resource version: {after} ({})",
                    store.compacted()
                ));
                initial.push(watch_line("ERROR", &e.to_json()));
                drop(store);
                let _ = tx.try_send(initial.remove(0));
                return Ok(Reply::Raw(stream_response(body_rx)));
            }
            initial.extend(
                store
                    .history_after(after)
                    .filter(|e| filter.matches(&e.object))
                    .map(|e| e.line.clone()),
            );
        }
        (store.subscribe(), store.rv())
    };
    if send_initial == Some(true) {
        initial.push(bookmark_line(start_rv, true));
    }
    let task = WatchTask {
        shared: rc.shared.clone(),
        ctx: rc.ctx.clone(),
        identity: rc.identity.map(str::to_owned),
        ip: rc.ip,
        filter,
        bookmarks: bookmarks.then_some(rc.shared.opts.bookmark_interval),
        timeout,
    };
    tokio::spawn(task.run(tx, rx, initial, start_rv));
    Ok(Reply::Raw(stream_response(body_rx)))
}

pub(super) fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Stream(rx))
        .expect("static response parts are valid")
}

pub(super) struct WatchTask {
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    identity: Option<String>,
    ip: IpAddr,
    filter: Filter,
    bookmarks: Option<Duration>,
    timeout: Duration,
}

impl WatchTask {
    /// Sends one line, first waiting out a partition of this client. Returns false when the
    /// watch must end.
    pub(super) async fn send(&self, tx: &mpsc::Sender<Bytes>, line: Bytes) -> bool {
        let partitioned = self
            .shared
            .faults
            .borrow()
            .partition_for(self.identity.as_deref(), self.ip)
            .is_some();
        if partitioned {
            let proceed = tokio::select! {
                p = partition_gate(&self.shared, self.identity.as_deref(), self.ip) => p,
                _ = tx.closed() => return false,
            };
            if !proceed {
                self.ctx.kill.cancel();
                return false;
            }
        }
        tx.send(line).await.is_ok()
    }

    pub(super) async fn run(
        self,
        tx: mpsc::Sender<Bytes>,
        mut rx: broadcast::Receiver<Arc<StoreEvent>>,
        initial: Vec<Bytes>,
        start_rv: u64,
    ) {
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        for line in initial {
            if !self.send(&tx, line).await {
                return;
            }
        }
        // kube-apiserver's schedule (cacheWatcher.nextBookmarkTime): every
        // period, and once 2 s before the watch's timeout; none when that
        // moment has passed (so none at all for a timeout of 2 s or less).
        let pretimeout = (started + self.timeout).checked_sub(Duration::from_secs(2));
        let next_bookmark = |now: tokio::time::Instant| {
            let period = self.bookmarks?;
            let at = match pretimeout {
                Some(p) => p.min(now + period),
                None => now + period,
            };
            (at > now).then_some(at)
        };
        let mut next = next_bookmark(started);
        let bookmark = tokio::time::sleep_until(next.unwrap_or(started));
        tokio::pin!(bookmark);
        let mut last_rv = start_rv;
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                r = rx.recv() => match r {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if self.filter.matches(&ev.object) && !self.send(&tx, ev.line.clone()).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "watch fell behind; closing it");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut bookmark, if next.is_some() => {
                    if !self.send(&tx, bookmark_line(last_rv, false)).await {
                        return;
                    }
                    next = next_bookmark(tokio::time::Instant::now());
                    if let Some(at) = next {
                        bookmark.as_mut().reset(at);
                    }
                }
            }
        }
    }
}
