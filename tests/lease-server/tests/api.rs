//! The embedded Lease API server, exercised through a real kube-rs client over
//! loopback: the API itself (CRUD, watches, TLS, validation).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vip_lease_server::LeaseServerOptions;

use common::*;

#[tokio::test]
async fn crud_conflicts_and_errors_through_kube_client() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, Some("node-a")).await;

        let created = api.create(&PostParams::default(), &new_lease("vip", "node-a")).await.unwrap();
        let rv1: u64 = created.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        assert!(created.metadata.uid.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(h.lease(NS, "vip").unwrap(), created);

        let dup = api_status(api.create(&PostParams::default(), &new_lease("vip", "node-b")).await);
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        assert_eq!(dup.message, "leases.coordination.k8s.io \"vip\" already exists");

        let got = api.get("vip").await.unwrap();
        assert_eq!(got, created);

        // A renew with the right resourceVersion succeeds and moves the global version.
        let mut renew = got.clone();
        renew.spec.as_mut().unwrap().renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let renewed = api.replace("vip", &PostParams::default(), &renew).await.unwrap();
        let rv2: u64 = renewed.metadata.resource_version.as_deref().unwrap().parse().unwrap();
        assert!(rv2 > rv1);
        assert_eq!(renewed.metadata.uid, created.metadata.uid);
        assert_eq!(renewed.metadata.creation_timestamp, created.metadata.creation_timestamp);

        // The stale copy now conflicts, with the real message.
        let conflict = api_status(api.replace("vip", &PostParams::default(), &renew).await);
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            conflict.message,
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"vip\": the object has been \
             modified; please apply your changes to the latest version and try again"
        );

        // No resourceVersion on an update: 422, as leases do not allow unconditional updates.
        let mut unconditional = renewed.clone();
        unconditional.metadata.resource_version = None;
        let invalid = api_status(api.replace("vip", &PostParams::default(), &unconditional).await);
        assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
        assert!(invalid.message.contains("metadata.resourceVersion"), "{}", invalid.message);

        // Name in the body must match the URL.
        let mut other = renewed.clone();
        other.metadata.name = Some("other".into());
        let bad = api_status(api.replace("vip", &PostParams::default(), &other).await);
        assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));

        // Invalid spec.
        let mut zero = new_lease("zero", "x");
        zero.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
        let inv = api_status(api.create(&PostParams::default(), &zero).await);
        assert_eq!(inv.code, 422);
        assert!(inv.message.contains("spec.leaseDurationSeconds"), "{}", inv.message);

        let missing = api_status(api.get("nope").await);
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert_eq!(missing.message, "leases.coordination.k8s.io \"nope\" not found");

        // Merge patch works and is optimistic only when it carries a resourceVersion.
        let patched = api
            .patch(
                "vip",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"holderIdentity": "node-c"}})),
            )
            .await
            .unwrap();
        assert_eq!(holder(&patched), Some("node-c"));

        let list = api.list(&Default::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.metadata.resource_version, Some(h.resource_version().to_string()));

        let deleted = api.delete("vip", &DeleteParams::default()).await.unwrap();
        assert!(deleted.is_right(), "a Lease delete answers a Status");
        assert!(h.lease(NS, "vip").is_none());
        let gone = api_status(api.delete("vip", &DeleteParams::default()).await);
        assert_eq!(gone.code, 404);

        // Only the deliberately wrong requests were recorded as rejected.
        let rejected: Vec<u16> = h.rejected().iter().map(|r| r.code).collect();
        assert_eq!(rejected, vec![422, 400, 422], "{:?}", h.rejected());
        let c = h.counters_for("node-a");
        assert_eq!((c.create, c.get, c.update, c.patch, c.list, c.delete), (3, 2, 4, 1, 1, 2));
        h.shutdown().await;
    })
    .await;
}

async fn next(
    events: &mut futures::stream::BoxStream<'_, kube::Result<WatchEvent<Lease>>>,
) -> WatchEvent<Lease> {
    events.try_next().await.unwrap().expect("watch still open")
}

#[tokio::test]
async fn watch_sees_every_change_and_bookmarks() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, Some("watcher")).await;
        api.create(&PostParams::default(), &new_lease("existing", "a"))
            .await
            .unwrap();

        let wp = WatchParams::default()
            .fields("metadata.name=vip")
            .timeout(20);
        let mut events = api.watch(&wp, "0").await.unwrap().boxed();

        let created = api
            .create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        let mut ev = next(&mut events).await;
        while matches!(ev, WatchEvent::Bookmark(_)) {
            ev = next(&mut events).await;
        }
        let WatchEvent::Added(l) = ev else {
            panic!("expected ADDED, got {ev:?}")
        };
        assert_eq!(
            l.metadata.resource_version,
            created.metadata.resource_version
        );

        let mut upd = created.clone();
        upd.spec.as_mut().unwrap().holder_identity = Some("b".into());
        let replaced = api
            .replace("vip", &PostParams::default(), &upd)
            .await
            .unwrap();
        api.delete("vip", &DeleteParams::default()).await.unwrap();

        let (mut modified, mut deleted, mut bookmarks) = (None, None, 0);
        while deleted.is_none() || bookmarks == 0 {
            match next(&mut events).await {
                WatchEvent::Modified(l) => modified = Some(l),
                WatchEvent::Deleted(l) => deleted = Some(l),
                WatchEvent::Bookmark(b) => {
                    bookmarks += 1;
                    assert!(b.metadata.resource_version.parse::<u64>().is_ok());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let modified = modified.expect("MODIFIED seen before DELETED");
        assert_eq!(holder(&modified), Some("b"));
        assert_eq!(
            modified.metadata.resource_version,
            replaced.metadata.resource_version
        );
        let deleted = deleted.unwrap();
        let del_rv: u64 = deleted.metadata.resource_version.unwrap().parse().unwrap();
        assert_eq!(del_rv, h.resource_version());

        // A watch from a resourceVersion replays what happened after it.
        let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
        let replay: Vec<_> = api
            .watch(
                &WatchParams::default()
                    .fields("metadata.name=vip")
                    .timeout(1),
                &rv.to_string(),
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let kinds: Vec<String> = replay
            .iter()
            .filter(|e| !matches!(e, WatchEvent::Bookmark(_)))
            .map(|e| format!("{e:?}"))
            .collect();
        assert_eq!(kinds, vec!["Modified event", "Deleted event"]);
        assert_eq!(h.counters_for("watcher").watch, 2);
        assert!(h.rejected().is_empty(), "{:?}", h.rejected());
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stale_resource_version_gets_410_gone() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, None).await;
        let l = api
            .create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        let old_rv = l.metadata.resource_version.clone().unwrap();
        h.upsert_lease(Lease {
            metadata: ObjectMeta {
                namespace: Some(NS.into()),
                ..l.metadata.clone()
            },
            ..new_lease("vip", "b")
        });
        h.compact();
        let mut events = api
            .watch(&WatchParams::default(), &old_rv)
            .await
            .unwrap()
            .boxed();
        match events.try_next().await.unwrap() {
            Some(WatchEvent::Error(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
                assert!(
                    s.message.starts_with("too old resource version"),
                    "{}",
                    s.message
                );
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        assert!(
            events.try_next().await.unwrap().is_none(),
            "the watch ends after the error"
        );
        h.shutdown().await;
    })
    .await;
}

/// After a restart the history is gone, as kube-apiserver's watch cache
/// starts afresh: a watch from before it gets 410 naming the current
/// resourceVersion, from which a watch is accepted.
#[tokio::test]
async fn a_restart_drops_the_watch_history() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, None).await;
        let l = api
            .create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        let old_rv = l.metadata.resource_version.clone().unwrap();
        api.delete("vip", &Default::default()).await.unwrap();
        h.restart().await;
        let now = h.resource_version();
        let wp = WatchParams::default().timeout(1);
        let mut events = api.watch(&wp, &old_rv).await.unwrap().boxed();
        match events.try_next().await.unwrap() {
            Some(WatchEvent::Error(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
                assert_eq!(
                    s.message,
                    format!("too old resource version: {old_rv} ({now})")
                );
            }
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        let from_now: Vec<_> = api
            .watch(&wp.disable_bookmarks(), &now.to_string())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(from_now.is_empty(), "{from_now:?}");
        h.shutdown().await;
    })
    .await;
}

/// kube-apiserver's bookmark schedule: with a period longer than the watch,
/// one bookmark 2 s before its timeout; none for a timeout of 2 s or less.
#[tokio::test]
async fn a_bookmark_comes_two_seconds_before_the_watch_timeout() {
    bounded(async {
        let h = start_with(LeaseServerOptions {
            bookmark_interval: Duration::from_secs(60),
            ..LeaseServerOptions::default()
        })
        .await;
        let api = leases(&h, None).await;
        let rv = h.resource_version().to_string();
        let timeline = |timeout: u32| {
            let api = api.clone();
            let rv = rv.clone();
            async move {
                let start = Instant::now();
                let mut s = api
                    .watch(&WatchParams::default().timeout(timeout), &rv)
                    .await
                    .unwrap()
                    .boxed();
                let mut bookmarks = Vec::new();
                while let Some(e) = s.try_next().await.unwrap() {
                    assert!(matches!(e, WatchEvent::Bookmark(_)), "{e:?}");
                    bookmarks.push(start.elapsed());
                }
                (bookmarks, start.elapsed())
            }
        };
        let ((three, end3), (two, end2)) = tokio::join!(timeline(3), timeline(2));
        assert_eq!(three.len(), 1, "{three:?}");
        assert!(three[0] >= Duration::from_millis(900), "{three:?}");
        assert!(three[0] < Duration::from_millis(1500), "{three:?}");
        assert!(end3 >= Duration::from_millis(2900), "{end3:?}");
        assert!(two.is_empty(), "{two:?}");
        assert!(end2 >= Duration::from_millis(1900), "{end2:?}");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn tls_requires_a_client_certificate() {
    bounded(async {
        let h = start().await;
        // A client that trusts the CA but has no certificate of its own.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(h.pki().ca_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(h.addr().ip().into());
        let outcome = async {
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        }
        .await;
        match outcome {
            Err(_) => {}
            Ok(buf) => assert!(
                buf.is_empty(),
                "answered without a client cert: {}",
                String::from_utf8_lossy(&buf)
            ),
        }
        // The kubeconfig's user does get in.
        let v = client(&h, None).await.apiserver_version().await.unwrap();
        assert_eq!(v.major, "1");
        h.shutdown().await;
    })
    .await;
}

/// Commit (through the handle) to arrival on a kube-rs watch stream, on loopback.
#[tokio::test]
async fn watch_latency_is_well_under_10ms() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, None).await;
        let base = api
            .create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        let rv = base.metadata.resource_version.clone().unwrap();
        let mut events = api
            .watch(
                // No bookmarks (200 ms apart here) between the measured events.
                &WatchParams::default()
                    .fields("metadata.name=vip")
                    .timeout(60)
                    .disable_bookmarks(),
                &rv,
            )
            .await
            .unwrap()
            .boxed();
        let mut samples = Vec::new();
        for i in 0..200 {
            let mut l = base.clone();
            l.metadata.namespace = Some(NS.into());
            l.spec.as_mut().unwrap().holder_identity = Some(format!("h{i}"));
            let t = Instant::now();
            h.upsert_lease(l);
            match events.try_next().await.unwrap() {
                Some(WatchEvent::Modified(got)) => {
                    assert_eq!(holder(&got), Some(format!("h{i}").as_str()))
                }
                other => panic!("unexpected {other:?}"),
            }
            samples.push(t.elapsed());
        }
        samples.sort();
        let p50 = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        let max = samples[samples.len() - 1];
        println!(
            "watch event latency over {} events: p50 {p50:?} p99 {p99:?} max {max:?}",
            samples.len()
        );
        assert!(p50 < Duration::from_millis(5), "p50 {p50:?}");
        h.shutdown().await;
    })
    .await;
}

/// Raw requests a real API server refuses are refused and recorded.
#[tokio::test]
async fn invalid_requests_are_rejected_with_status_bodies() {
    bounded(async {
        let h = start().await;
        let client = client(&h, Some("raw")).await;
        let send = |req: http::Request<Vec<u8>>| {
            let client = client.clone();
            async move { client.send(req.map(Into::into)).await.unwrap() }
        };
        let base = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
        let cases: Vec<(http::Request<Vec<u8>>, u16, &str)> = vec![
            (http::Request::get("/api/v1/pods").body(vec![]).unwrap(), 404, "NotFound"),
            (
                http::Request::post(base).header("content-type", "application/json").body(b"{not json".to_vec()).unwrap(),
                400,
                "BadRequest",
            ),
            (
                http::Request::post(base)
                    .header("content-type", "application/json")
                    .body(br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#.to_vec())
                    .unwrap(),
                400,
                "BadRequest",
            ),
            (
                http::Request::post(base)
                    .header("content-type", "text/plain")
                    .body(br#"{"metadata":{"name":"x"}}"#.to_vec())
                    .unwrap(),
                415,
                "UnsupportedMediaType",
            ),
            (
                http::Request::post(base)
                    .header("content-type", "application/json")
                    .body(br#"{"kind":"Lease","metadata":{"name":"x","namespace":"default"}}"#.to_vec())
                    .unwrap(),
                400,
                "BadRequest",
            ),
            (http::Request::put(base).body(vec![]).unwrap(), 405, "MethodNotAllowed"),
            (http::Request::get(format!("{base}?watch=true&resourceVersionMatch=Exact")).body(vec![]).unwrap(), 422, "Invalid"),
            (http::Request::get(format!("{base}?fieldSelector=spec.holderIdentity%3Dx")).body(vec![]).unwrap(), 400, "BadRequest"),
        ];
        let n = cases.len();
        for (req, code, reason) in cases {
            let what = format!("{} {}", req.method(), req.uri());
            let resp = send(req).await;
            assert_eq!(resp.status().as_u16(), code, "{what}");
            let body = response_json(resp).await;
            assert_eq!(body["kind"], "Status", "{what}");
            assert_eq!(body["status"], "Failure", "{what}");
            assert_eq!(body["reason"], reason, "{what}");
            assert_eq!(body["code"], code, "{what}");
        }
        assert_eq!(h.rejected().len(), n, "{:?}", h.rejected());

        // Unknown fields are accepted with a warning, as the real server does by default.
        let resp = send(
            http::Request::post(base)
                .header("content-type", "application/json")
                .body(br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"w"},"spec":{"holder":"x"}}"#.to_vec())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 201);
        assert!(resp.headers().get("warning").is_some());
        assert_eq!(h.warnings().len(), 1);
        h.shutdown().await;
    })
    .await;
}

async fn response_json(resp: http::Response<kube::client::Body>) -> serde_json::Value {
    use http_body_util::BodyExt as _;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}
