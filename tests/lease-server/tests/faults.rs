//! The embedded Lease API server's fault injection (latency, errors,
//! partitions, dropped answers, restarts) and its control endpoint.

mod common;

use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff;
use kube::api::{PostParams, WatchEvent, WatchParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vip_lease_server::{Faults, LeaseServerOptions, PartitionMode, Target};

use common::*;

#[tokio::test]
async fn injected_latency_and_server_errors() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, Some("slow")).await;
        let fast = leases(&h, Some("fast")).await;
        api.create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();

        h.update_faults(|f| {
            f.latency_by_identity
                .insert("slow".into(), Duration::from_millis(150));
        });
        let t = Instant::now();
        api.get("vip").await.unwrap();
        let slow = t.elapsed();
        let t = Instant::now();
        fast.get("vip").await.unwrap();
        let quick = t.elapsed();
        println!("latency fault: slow GET {slow:?}, other client {quick:?}");
        assert!(slow >= Duration::from_millis(150), "{slow:?}");
        assert!(quick < Duration::from_millis(100), "{quick:?}");

        h.set_faults(Faults {
            error_probability: 1.0,
            error_code: 500,
            ..Faults::default()
        });
        let e = api_status(api.get("vip").await);
        assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));

        // 503 is retried by kube-rs' default retry policy (up to 15 times, backing off from 5 ms):
        // the request goes on until the server recovers.
        h.reset_counters();
        h.set_faults(Faults {
            error_probability: 1.0,
            error_code: 503,
            error_targets: vec![Target::Identity("slow".into())],
            ..Faults::default()
        });
        let retrying = tokio::spawn({
            let api = api.clone();
            async move { api.get("vip").await }
        });
        while h.counters_for("slow").get < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fast.get("vip").await.unwrap();
        h.heal();
        retrying
            .await
            .unwrap()
            .expect("the retried GET succeeds once the server recovers");
        let gets = h.counters_for("slow").get;
        println!("503 fault: kube-rs sent {gets} GETs for one api.get()");
        assert!(gets >= 4, "{:?}", h.counters());
        fast.get("vip").await.unwrap();

        h.heal();
        api.get("vip").await.unwrap();
        assert!(h.rejected().is_empty());
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn partition_by_identity_holds_and_refuses() {
    bounded(async {
        let h = start().await;
        let a = leases(&h, Some("node-a")).await;
        let b = leases(&h, Some("node-b")).await;
        a.create(&PostParams::default(), &new_lease("vip", "node-a")).await.unwrap();

        h.partition(Target::Identity("node-a".into()));
        let cur = b.get("vip").await.unwrap();
        // node-a's renew hangs while node-b is served.
        let mut renew = cur.clone();
        renew.spec.as_mut().unwrap().renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let held = tokio::spawn({
            let a = a.clone();
            async move { a.replace("vip", &PostParams::default(), &renew).await }
        });
        let got = h
            .wait_for_lease(NS, "vip", Duration::from_millis(300), |l| {
                l.is_some_and(|l| l.metadata.resource_version != cur.metadata.resource_version)
            })
            .await;
        assert!(got.is_none(), "a partitioned write must not commit");
        assert!(!held.is_finished());
        b.get("vip").await.unwrap();

        // Healing lets the held write through (packets delayed, not lost).
        h.heal();
        let done = held.await.unwrap().unwrap();
        assert_ne!(done.metadata.resource_version, cur.metadata.resource_version);

        // Refuse: the connection is closed at once, no answer.
        h.partition_with(Target::Identity("node-a".into()), PartitionMode::Refuse);
        let t = Instant::now();
        let r = a.get("vip").await;
        assert!(matches!(r, Err(ref e) if !matches!(e, kube::Error::Api(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        b.get("vip").await.unwrap();
        h.heal();
        a.get("vip").await.unwrap();

        // RBAC denial for one identity.
        h.forbid("node-b");
        let mut l = a.get("vip").await.unwrap();
        l.spec.as_mut().unwrap().holder_identity = Some("node-b".into());
        let e = api_status(b.replace("vip", &PostParams::default(), &l).await);
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "leases.coordination.k8s.io \"vip\" is forbidden: User \"kubernetes-admin\" cannot update resource \
             \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-system\""
        );
        a.replace("vip", &PostParams::default(), &l).await.unwrap();

        let counters = h.counters();
        assert!(counters["node-a"].api_total() >= 5, "{counters:?}");
        assert!(counters["node-b"].get >= 2, "{counters:?}");
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dropped_answer_after_commit() {
    bounded(async {
        let h = start().await;
        let mut cfg_client = leases(&h, Some("node-a")).await;
        let l = cfg_client
            .create(&PostParams::default(), &new_lease("vip", "node-a"))
            .await
            .unwrap();
        h.set_faults(Faults {
            drop_probability: 1.0,
            drop_after_commit: true,
            ..Faults::default()
        });
        let mut renew = l.clone();
        renew.spec.as_mut().unwrap().holder_identity = Some("changed".into());
        let r = cfg_client
            .replace("vip", &PostParams::default(), &renew)
            .await;
        assert!(r.is_err(), "the answer must be lost: {r:?}");
        assert_eq!(
            holder(&h.lease(NS, "vip").unwrap()),
            Some("changed"),
            "but the write committed"
        );
        h.heal();
        cfg_client = leases(&h, Some("node-a")).await;
        assert_eq!(
            holder(&cfg_client.get("vip").await.unwrap()),
            Some("changed")
        );
        let log = h.requests();
        assert!(
            log.iter().any(|r| r.status == 0 && r.method == "PUT"),
            "{log:?}"
        );
        h.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn restart_ends_watches_and_keeps_state() {
    bounded(async {
        let h = start().await;
        let api = leases(&h, None).await;
        api.create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();
        let rv_before = h.resource_version();
        let mut events = api
            .watch(&WatchParams::default().timeout(60), "0")
            .await
            .unwrap()
            .boxed();
        assert!(matches!(
            events.try_next().await.unwrap(),
            Some(WatchEvent::Added(_))
        ));
        h.restart().await;
        let end = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("watch ended");
        assert!(
            !matches!(end, Some(Ok(_))),
            "no event after a restart: {end:?}"
        );
        assert_eq!(h.resource_version(), rv_before);
        assert_eq!(holder(&api.get("vip").await.unwrap()), Some("a"));
        h.shutdown().await;
    })
    .await;
}

async fn http_plain(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let code = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn control_endpoint_sets_faults_and_reads_counters() {
    bounded(async {
        let h = start_with(LeaseServerOptions {
            control: Some("127.0.0.1:0".parse().unwrap()),
            ..LeaseServerOptions::default()
        })
        .await;
        let ctl = h.control_addr().unwrap();
        let api = leases(&h, Some("node-a")).await;
        api.create(&PostParams::default(), &new_lease("vip", "a"))
            .await
            .unwrap();

        let (code, _) = http_plain(
            ctl,
            "PUT",
            "/_lab/faults",
            r#"{"error_probability":1,"error_code":500}"#,
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(h.faults().error_code, 500);
        assert_eq!(api_status(api.get("vip").await).code, 500);
        let (code, _) = http_plain(ctl, "POST", "/_lab/heal", "").await;
        assert_eq!(code, 200);
        api.get("vip").await.unwrap();

        let (code, counters) = http_plain(ctl, "GET", "/_lab/counters", "").await;
        assert_eq!(code, 200);
        assert_eq!(counters["node-a"]["create"], 1);
        assert_eq!(counters["node-a"]["get"], 2);
        let (_, leases) = http_plain(ctl, "GET", "/_lab/leases", "").await;
        assert_eq!(leases[0]["metadata"]["name"], "vip");
        let (code, _) = http_plain(
            ctl,
            "POST",
            "/_lab/partition",
            r#"{"target":{"identity":"node-a"},"mode":"refuse"}"#,
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(h.faults().partitions.len(), 1);
        h.shutdown().await;
    })
    .await;
}
