//! Rule 2 of docs/peer-promises.md: the leader's fence from its last
//! successful write and its members' promises. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::MonoTime;

/// `deadline = min(S_k + rd, min over m of T_m + P - eps)`, closed before
/// `answer_from` and while a member in `waits_for` has not acked this
/// leadership. `None`: the fence stays closed now.
pub fn deadline(
    now: MonoTime,
    answer_from: MonoTime,
    api_deadline: MonoTime,
    waits_for: &BTreeSet<String>,
    acks: &BTreeMap<String, MonoTime>,
    promise_less_margin: Duration,
) -> Option<MonoTime> {
    if now < answer_from {
        return None;
    }
    let mut d = api_deadline;
    for m in waits_for {
        d = d.min(acks.get(m)?.saturating_add(promise_less_margin));
    }
    (d > now).then_some(d)
}

/// Members whose newest ack (or, never acked, the start of this leadership)
/// is older than `remove_after`: the leader removes them by CAS (rule 3).
pub fn stale(
    now: MonoTime,
    since: MonoTime,
    waits_for: &BTreeSet<String>,
    acks: &BTreeMap<String, MonoTime>,
    remove_after: Duration,
) -> Vec<String> {
    waits_for
        .iter()
        .filter(|m| {
            let last = acks.get(*m).copied().unwrap_or(since).max(since);
            now.saturating_duration_since(last) > remove_after
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn t(ms: u64) -> MonoTime {
        MonoTime(ms * MS)
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_fence_is_the_earliest_promise_and_never_past_the_api_deadline() {
        let pm = Duration::from_millis(90);
        let acks: BTreeMap<String, MonoTime> =
            [("b".to_owned(), t(1000)), ("c".to_owned(), t(1010))].into();
        let w = set(&["b", "c"]);
        assert_eq!(
            deadline(t(1020), t(0), t(3000), &w, &acks, pm),
            Some(t(1090))
        );
        // No members: the API deadline alone (the slow path).
        assert_eq!(
            deadline(t(1020), t(0), t(3000), &set(&[]), &acks, pm),
            Some(t(3000))
        );
        // The API deadline is the cap.
        assert_eq!(
            deadline(t(1020), t(0), t(1050), &w, &acks, pm),
            Some(t(1050))
        );
        // Before answer_from: closed (variant a).
        assert_eq!(deadline(t(1020), t(1021), t(3000), &w, &acks, pm), None);
        // A member that has not acked keeps it closed (variant e).
        assert_eq!(
            deadline(t(1020), t(0), t(3000), &set(&["b", "d"]), &acks, pm),
            None
        );
        // Promises run out: closed.
        assert_eq!(deadline(t(1090), t(0), t(3000), &w, &acks, pm), None);
    }

    #[test]
    fn members_are_stale_after_remove_after_counted_from_this_leadership() {
        let acks: BTreeMap<String, MonoTime> = [("b".to_owned(), t(100))].into();
        let w = set(&["b", "c"]);
        let r = Duration::from_millis(60);
        assert_eq!(stale(t(150), t(120), &w, &acks, r), Vec::<String>::new());
        assert_eq!(stale(t(181), t(120), &w, &acks, r), vec!["b", "c"]);
        let acks: BTreeMap<String, MonoTime> = [("b".to_owned(), t(170))].into();
        assert_eq!(stale(t(181), t(120), &w, &acks, r), vec!["c"]);
    }
}
