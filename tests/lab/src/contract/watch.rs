//! The watch part of the contract: events in order with increasing
//! resourceVersions, replay from a resourceVersion, the initial state, 410
//! for a resourceVersion older than the history, and bookmarks.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::time::Instant;

use super::checks::lease;
use super::{Ctx, Recorder, STEP, rv_of};

type Event = Result<WatchEvent<Lease>, kube::Error>;

fn kind(e: &Event) -> String {
    match e {
        Ok(WatchEvent::Added(_)) => "ADDED".into(),
        Ok(WatchEvent::Modified(_)) => "MODIFIED".into(),
        Ok(WatchEvent::Deleted(_)) => "DELETED".into(),
        Ok(WatchEvent::Bookmark(_)) => "BOOKMARK".into(),
        Ok(WatchEvent::Error(s)) => format!("ERROR {}", s.code),
        Err(e) => format!("stream error: {e}"),
    }
}

fn object(e: &Event) -> Option<&Lease> {
    match e {
        Ok(WatchEvent::Added(l) | WatchEvent::Modified(l) | WatchEvent::Deleted(l)) => Some(l),
        _ => None,
    }
}

/// The next `n` events other than bookmarks, each awaited for at most [`STEP`].
async fn next_events(s: &mut (impl Stream<Item = Event> + Unpin), n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(STEP, s.next()).await {
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            Ok(Some(e)) => out.push(e),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fn name_selector(name: &str) -> String {
    format!("metadata.name={name}")
}

/// The resourceVersion of a list of the Lease `name` (the collection's).
async fn list_rv(c: &Ctx, r: &mut Recorder, name: &str) -> Option<u64> {
    let lp = ListParams::default().fields(&name_selector(name));
    let list = r.ok("list", c.api.list(&lp).await)?;
    list.metadata.resource_version.and_then(|v| v.parse().ok())
}

/// A watch from a list's resourceVersion sees ADDED, MODIFIED and DELETED of
/// the writes that follow, in order, with the writes' resourceVersions; a
/// watch from the creation's resourceVersion replays the rest; a watch from
/// "0" or none starts with the current state as ADDED.
pub(crate) async fn sequence(c: &Ctx, r: &mut Recorder) {
    const NAME: &str = "contract-watch";
    let pp = PostParams::default();
    // As vip-agent watches: its Lease by name, bookmarks asked for.
    let wp = WatchParams::default()
        .fields(&name_selector(NAME))
        .timeout(30);

    r.begin("watch_events");
    let Some(from) = list_rv(c, r, NAME).await else {
        return;
    };
    let Some(stream) = r.ok("watch", c.api.watch(&wp, &from.to_string()).await) else {
        return;
    };
    let mut stream = stream.boxed();
    let Some(created) = r.ok("create", c.api.create(&pp, &lease(NAME, "n0")).await) else {
        return;
    };
    let mut next = created.clone();
    if let Some(s) = next.spec.as_mut() {
        s.holder_identity = Some("n1".into());
    }
    let Some(updated) = r.ok("replace", c.api.replace(NAME, &pp, &next).await) else {
        return;
    };
    r.ok("delete", c.api.delete(NAME, &DeleteParams::default()).await);
    let events = next_events(&mut stream, 3).await;
    let kinds: Vec<String> = events.iter().map(kind).collect();
    r.observe("types", &kinds);
    r.expect_eq(
        "types",
        kinds.join(","),
        "ADDED,MODIFIED,DELETED".to_owned(),
    );
    let rvs: Vec<u64> = events.iter().filter_map(object).map(rv_of).collect();
    let increasing = rvs.windows(2).all(|w| w[0] < w[1]) && rvs.first().is_some_and(|f| *f > from);
    r.observe("increasing", increasing);
    r.expect(
        increasing,
        format!("increasing resourceVersions after {from}: {rvs:?}"),
    );
    let writes_match = rvs.len() == 3 && rvs[0] == rv_of(&created) && rvs[1] == rv_of(&updated);
    r.observe("rvs_of_the_writes", writes_match);
    r.expect(
        writes_match,
        format!("events carry the writes' resourceVersions: {rvs:?}"),
    );
    let deleted = events.get(2).and_then(object);
    r.observe(
        "deleted_object_holder",
        deleted.and_then(|l| l.spec.as_ref()?.holder_identity.clone()),
    );
    drop(stream);

    r.begin("watch_replay");
    let from = rv_of(&created).to_string();
    if let Some(s) = r.ok("watch", c.api.watch(&wp, &from).await) {
        let mut s = s.boxed();
        let events = next_events(&mut s, 2).await;
        let kinds: Vec<String> = events.iter().map(kind).collect();
        r.observe("types", &kinds);
        r.expect_eq("types", kinds.join(","), "MODIFIED,DELETED".to_owned());
    }

    r.begin("watch_initial_state");
    let Some(current) = r.ok("create", c.api.create(&pp, &lease(NAME, "n2")).await) else {
        return;
    };
    for (label, rv) in [("from_0", "0"), ("from_none", "")] {
        if let Some(s) = r.ok("watch", c.api.watch(&wp, rv).await) {
            let mut s = s.boxed();
            let events = next_events(&mut s, 1).await;
            let kinds: Vec<String> = events.iter().map(kind).collect();
            r.observe(label, &kinds);
            r.expect_eq(label, kinds.join(","), "ADDED".to_owned());
            let same = events.first().and_then(object) == Some(&current);
            r.expect(same, format!("{label}: the current object"));
        }
    }
    r.ok("delete", c.api.delete(NAME, &DeleteParams::default()).await);
}

const RESTART: &str = "contract-restart";

/// Reads the current resourceVersion R, then writes (so that R is older than
/// what the restarted server starts from). Returns R.
pub(crate) async fn before_restart(c: &Ctx, r: &mut Recorder) -> Option<u64> {
    r.begin("before_restart");
    let mark = list_rv(c, r, RESTART).await?;
    r.ok(
        "create",
        c.api
            .create(&PostParams::default(), &lease(RESTART, "n0"))
            .await,
    )?;
    Some(mark)
}

/// After a restart of the server, a watch from a resourceVersion read before
/// it gets an ERROR event with 410 Expired whose message names the oldest
/// resourceVersion one can watch from (the real server: its watch cache
/// starts at the restart); from that one a watch is accepted. The Leases
/// survive the restart.
pub(crate) async fn after_restart(c: &Ctx, r: &mut Recorder, mark: Option<u64>) {
    r.begin("restart_keeps_leases");
    let kept = r.ok("get", c.api.get(RESTART).await);
    r.observe("kept", kept.is_some());

    r.begin("restart_watch_gone");
    let Some(mark) = mark else {
        r.expect(false, "a resourceVersion from before the restart");
        return;
    };
    let wp = WatchParams::default()
        .fields(&name_selector(RESTART))
        .timeout(30);
    let Some(s) = r.ok("watch", c.api.watch(&wp, &mark.to_string()).await) else {
        return;
    };
    let mut s = s.boxed();
    let first = next_events(&mut s, 1).await;
    let Some(Ok(WatchEvent::Error(status))) = first.first() else {
        r.expect(
            false,
            format!(
                "an ERROR event, got {:?}",
                first.iter().map(kind).collect::<Vec<_>>()
            ),
        );
        return;
    };
    r.expect_status(Some(status), 410, "Expired");
    // "too old resource version: R (N)": R and N vary, their meaning does not.
    let oldest = status
        .message
        .rsplit_once('(')
        .and_then(|(_, n)| n.trim_end_matches(')').parse::<u64>().ok());
    let mut shown = super::status_json(status);
    if let (Some(n), Some(m)) = (oldest, shown.get_mut("message")) {
        let text = m.as_str().unwrap_or_default();
        *m = text
            .replace(&format!("({n})"), "(N)")
            .replace(&format!(": {mark} "), ": R ")
            .into();
    }
    r.observe("status", shown);
    let Some(oldest) = oldest else {
        r.expect(
            false,
            format!("a message naming the oldest version: {}", status.message),
        );
        return;
    };
    r.observe("n_after_r", oldest > mark);
    r.expect(oldest > mark, format!("N = {oldest} > R = {mark}"));
    drop(s);

    r.begin("restart_watch_from_n");
    // From N itself a watch is accepted: the Lease's later change arrives.
    if let Some(s) = r.ok("watch from N", c.api.watch(&wp, &oldest.to_string()).await) {
        let mut s = s.boxed();
        r.ok(
            "delete",
            c.api.delete(RESTART, &DeleteParams::default()).await,
        );
        let events = next_events(&mut s, 1).await;
        let kinds: Vec<String> = events.iter().map(kind).collect();
        r.observe("types", &kinds);
        r.expect_eq("types", kinds.join(","), "DELETED".to_owned());
    }
}

/// What one watch delivered before it ended.
struct Timeline {
    /// Event type and seconds since the watch started.
    events: Vec<(String, f64, Option<u64>)>,
    /// Seconds until the server ended the stream (None: not within the bound).
    ended: Option<f64>,
}

async fn timeline(c: &Ctx, wp: &WatchParams, from: &str) -> Result<Timeline, kube::Error> {
    let start = Instant::now();
    let mut s = c.api.watch(wp, from).await?.boxed();
    let mut events = Vec::new();
    let bound = Duration::from_secs(u64::from(wp.timeout.unwrap_or(0))) + STEP;
    loop {
        match tokio::time::timeout_at(start + bound, s.next()).await {
            Ok(Some(e)) => {
                let rv = match &e {
                    Ok(WatchEvent::Bookmark(b)) => b.metadata.resource_version.parse().ok(),
                    _ => None,
                };
                events.push((kind(&e), start.elapsed().as_secs_f64(), rv));
            }
            Ok(None) => {
                return Ok(Timeline {
                    events,
                    ended: Some(start.elapsed().as_secs_f64()),
                });
            }
            Err(_) => {
                return Ok(Timeline {
                    events,
                    ended: None,
                });
            }
        }
    }
}

/// Bookmarks on an idle watch. The real server sends them about once a
/// minute and once 2 s before the watch's timeout (none if the timeout is
/// 2 s or less). It schedules them in 1 s buckets and a ~1 s ticker (+-25%)
/// pops the due buckets, so that one may come up to ~1 s early, and then a
/// second one follows at the next tick: in a 5 s watch one or two arrive,
/// between 2 and 4.5 s. Without allowWatchBookmarks none. Every watch ends
/// at its timeoutSeconds.
pub(crate) async fn bookmarks(c: &Ctx, r: &mut Recorder) {
    const NAME: &str = "contract-bookmark";
    r.begin("bookmarks");
    let Some(from) = list_rv(c, r, NAME).await else {
        return;
    };
    let base = WatchParams::default().fields(&name_selector(NAME));
    let asked = base.clone().timeout(5);
    let not_asked = base.clone().timeout(5).disable_bookmarks();
    let short = base.timeout(2);
    let rv = from.to_string();
    let (a, b, s) = tokio::join!(
        timeline(c, &asked, &rv),
        timeline(c, &not_asked, &rv),
        timeline(c, &short, &rv),
    );
    for (label, t, timeout, want) in [
        ("asked_5s", a, 5.0, "BOOKMARK"),
        ("not_asked_5s", b, 5.0, ""),
        ("asked_2s", s, 2.0, ""),
    ] {
        let Some(t) = r.ok(label, t) else {
            continue;
        };
        // One or two bookmarks (see above) are the same behaviour.
        let mut kinds: Vec<&str> = t.events.iter().map(|e| e.0.as_str()).collect();
        let bookmarks = kinds.iter().filter(|k| **k == "BOOKMARK").count();
        kinds.dedup();
        r.observe(label, &kinds);
        r.expect_eq(label, kinds.join(","), want.to_owned());
        r.expect(bookmarks <= 2, format!("{label}: {bookmarks} bookmarks"));
        let ended = t
            .ended
            .is_some_and(|e| e >= timeout - 0.5 && e < timeout + 2.5);
        r.observe(&format!("{label}_ended_at_timeout"), ended);
        r.expect(
            ended,
            format!("{label}: ends at its timeout, ended {:?}", t.ended),
        );
        for (k, at, rv) in &t.events {
            if k == "BOOKMARK" {
                let when = *at >= timeout - 3.2 && *at <= timeout - 0.3;
                r.observe(&format!("{label}_bookmark_before_timeout"), when);
                r.expect(
                    when,
                    format!("{label}: bookmark about 2 s before the timeout, at {at:.2} s"),
                );
                r.expect(
                    rv.is_some_and(|v| v >= from),
                    format!("{label}: bookmark rv {rv:?} >= {from}"),
                );
            }
        }
    }
}
