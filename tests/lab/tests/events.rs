//! Kubernetes Events on the REAL control plane: three agents (their own
//! `vip-agent` credentials, deploy/rbac.yaml), a graceful failover (SIGTERM
//! to the leader) and a hard one (SIGKILL to the new leader); then the
//! Events in kube-system, listed through the API with super-admin.conf from
//! a node's namespace, tell the story in eventTime order: who was elected
//! and why, who stepped down and why, who released.
//!
//! With `VIP_LAB_EVENTS_CAPTURE=<file>`, the output of
//! `kubectl get events -n kube-system` run in a node's namespace is saved
//! there (for the README).
//!
//! Needs root and a built `vip-agent`; skips with a reason otherwise. Run
//! with `--test-threads 1`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use vip_lab::controlplane::Identity;
use vip_lab::controlplane::objects::{ObjectError, client, in_ns};
use vip_lab::lab::{Lab, LabConfig, Scenario};

const NS: &str = "kube-system";

/// One Event as the story needs it.
#[derive(Debug)]
struct Told {
    reason: String,
    by: String,
    note: String,
    regarding_uid: Option<String>,
}

impl std::fmt::Display for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}: {}", self.reason, self.by, self.note)
    }
}

/// The agents' Events in kube-system, in eventTime order, and the Lease's uid.
async fn story(kubeconfig: PathBuf, lease_name: &str) -> Result<(Vec<Told>, String), ObjectError> {
    let c = client(&kubeconfig).await?;
    let lease = Api::<Lease>::namespaced(c.clone(), NS)
        .get(lease_name)
        .await?;
    let mut events: Vec<Event> = Api::<Event>::namespaced(c, NS)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("vip-agent"))
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    let told = events
        .into_iter()
        .map(|e| {
            let regarding = e.regarding.unwrap_or_default();
            assert_eq!(regarding.kind.as_deref(), Some("Lease"), "{:?}", e.note);
            assert_eq!(regarding.name.as_deref(), Some(lease_name));
            assert_eq!(regarding.namespace.as_deref(), Some(NS));
            assert!(e.event_time.is_some(), "eventTime set");
            Told {
                reason: e.reason.unwrap_or_default(),
                by: e.reporting_instance.unwrap_or_default(),
                note: e.note.unwrap_or_default(),
                regarding_uid: regarding.uid,
            }
        })
        .collect();
    Ok((told, lease.metadata.uid.unwrap_or_default()))
}

/// The agent's own identity (deploy/rbac.yaml) may create Events in
/// kube-system, in both API groups, and nowhere else. Answers the HTTP codes
/// of: events.k8s.io in kube-system, core in kube-system, events.k8s.io in
/// default.
async fn agent_event_rights(kubeconfig: PathBuf) -> Result<[u16; 3], ObjectError> {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use kube::api::PostParams;
    let c = client(&kubeconfig).await?;
    fn code<T>(r: Result<T, kube::Error>) -> Result<u16, ObjectError> {
        match r {
            Ok(_) => Ok(201),
            Err(kube::Error::Api(s)) => Ok(s.code),
            Err(e) => Err(e.into()),
        }
    }
    let meta = |ns: &str| ObjectMeta {
        generate_name: Some("rbac-check-".into()),
        namespace: Some(ns.into()),
        ..ObjectMeta::default()
    };
    let regarding = |ns: &str| ObjectReference {
        kind: Some("Lease".into()),
        name: Some("rbac-check".into()),
        namespace: Some(ns.into()),
        ..ObjectReference::default()
    };
    let new = |ns: &str| Event {
        metadata: meta(ns),
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Check".into()),
        reason: Some("RbacCheck".into()),
        type_: Some("Normal".into()),
        regarding: Some(regarding(ns)),
        reporting_controller: Some("vip-lab".into()),
        reporting_instance: Some("vip-lab".into()),
        ..Event::default()
    };
    let pp = PostParams::default();
    let new_api = code(
        Api::<Event>::namespaced(c.clone(), NS)
            .create(&pp, &new(NS))
            .await,
    )?;
    let core = CoreEvent {
        metadata: meta(NS),
        involved_object: regarding(NS),
        reason: Some("RbacCheck".into()),
        type_: Some("Normal".into()),
        ..CoreEvent::default()
    };
    let core = code(
        Api::<CoreEvent>::namespaced(c.clone(), NS)
            .create(&pp, &core)
            .await,
    )?;
    let default = code(
        Api::<Event>::namespaced(c, "default")
            .create(&pp, &new("default"))
            .await,
    )?;
    Ok([new_api, core, default])
}

/// Index of the first Event after `from` matching `reason` and `by`.
fn find(story: &[Told], from: usize, reason: &str, by: &str) -> Option<usize> {
    (from..story.len()).find(|&i| story[i].reason == reason && story[i].by == by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_and_a_hard_failover_tell_their_story_in_events() {
    vip_lab::require_lab!();
    let capture = std::env::var_os("VIP_LAB_EVENTS_CAPTURE").map(PathBuf::from);
    if capture.is_some() {
        vip_lab::require_tool!("kubectl", package = "kubernetes-client");
    }
    let mut lab = Lab::start(LabConfig::default()).await.expect("lab");
    let names = lab.node_names();
    let first = names[lab
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader")]
    .clone();
    lab.run_scenario(Scenario::GracefulStop, 0)
        .await
        .expect("graceful stop");
    let second = names[lab
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader")]
    .clone();
    assert_ne!(first, second);
    lab.run_scenario(Scenario::Crash, 0).await.expect("crash");
    let third = names[lab
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader")]
    .clone();
    assert_ne!(second, third);

    let cp = lab.control_plane().expect("the real control plane");
    let kubeconfig = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
    let ns = lab.lan().node(0).ns();
    let lease_name = lab.config().implementation.lease_name();
    // The poster is asynchronous: the last Event may land a moment after the
    // new leader answers. Poll with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (story, uid) = loop {
        let (story, uid) = in_ns(ns, story(kubeconfig.clone(), lease_name)).expect("events");
        let done = story
            .iter()
            .filter(|t| t.reason == "LeaderElected" && t.by == third)
            .any(|t| t.note.contains(&format!("{second}'s lease expired")));
        if done || std::time::Instant::now() >= deadline {
            break (story, uid);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text: Vec<String> = story.iter().map(ToString::to_string).collect();
    eprintln!("events in {NS}, by eventTime:\n  {}", text.join("\n  "));
    let all = text.join("\n");

    // 1. The first leader was elected (it created the Lease).
    let i = find(&story, 0, "LeaderElected", &first)
        .unwrap_or_else(|| panic!("no LeaderElected by {first}:\n{all}"));
    assert!(
        story[i].note.starts_with(&format!("{first} became leader")),
        "{all}"
    );
    // 2. SIGTERM: it stepped down for the shutdown and released the Lease.
    let i = find(&story, i + 1, "StepDownShutdown", &first)
        .unwrap_or_else(|| panic!("no StepDownShutdown by {first}:\n{all}"));
    assert!(
        story[i].note.contains(&first) && story[i].note.contains("shutting down"),
        "{all}"
    );
    let i = find(&story, i + 1, "LeaderReleased", &first)
        .unwrap_or_else(|| panic!("no LeaderReleased by {first}:\n{all}"));
    assert!(story[i].note.contains("(shutdown)"), "{all}");
    // 3. The second leader took it, citing the release.
    let j = find(&story, i + 1, "LeaderElected", &second)
        .unwrap_or_else(|| panic!("no LeaderElected by {second} after the release:\n{all}"));
    assert_eq!(
        story[j].note,
        format!("{second} became leader: previous holder {first} released the lease"),
        "{all}"
    );
    // 4. SIGKILL: no word from the second; the third took over once its
    //    lease expired.
    let i = find(&story, j + 1, "LeaderElected", &third)
        .unwrap_or_else(|| panic!("no LeaderElected by {third} after the crash:\n{all}"));
    assert!(
        story[i].note.contains(&format!("{second}'s lease expired")),
        "{all}"
    );
    assert!(
        story[j + 1..i].iter().all(|t| t.by != second),
        "the killed leader said nothing:\n{all}"
    );
    // Every Event names its node and regards this Lease (its uid).
    for t in &story {
        assert!(t.note.starts_with(&t.by), "the note names the node: {t}");
        assert_eq!(t.regarding_uid.as_deref(), Some(uid.as_str()), "{t}");
    }

    if let Some(path) = capture {
        let out = ns
            .command("kubectl")
            .args(["get", "events", "-n", NS, "--kubeconfig"])
            .arg(&kubeconfig)
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = format!(
            "$ ip netns exec {} kubectl get events -n {NS} --kubeconfig {}\n{}",
            ns.name(),
            kubeconfig.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        std::fs::write(&path, text).expect("capture");
        eprintln!("saved {}", path.display());
    }
    // Least privilege: the agent's rights on events are kube-system's only.
    let agent_kubeconfig = cp.kubeconfig_as(0, Identity::Agent).to_owned();
    let rights = in_ns(ns, agent_event_rights(agent_kubeconfig)).expect("rbac check");
    assert_eq!(
        rights,
        [201, 201, 403],
        "events.k8s.io, core in kube-system; default"
    );

    lab.shutdown().await.expect("shutdown");
}
