//! The bounded model check of the peer-promise protocol: the correct protocol
//! has no split brain within the bound (and does fail over fast within it),
//! and every deliberately broken variant is caught with a shortest trace.

use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model};
use vip_model::{Faults, Params, PeerPromises, Variant};

const SPLIT_BRAIN: &str = "no split brain";
const FAST: &str = "fast takeover answers";
const RELEASED: &str = "released record acquirer answers";

/// Steps explored for the full model (every fault kind).
const FULL_ACTIONS: usize = 7;

/// At most this many steps for the correct protocol in a variant's scope.
const SCOPE_ACTIONS: usize = 11;

/// Steps for the correct protocol in the narrow release scope: (i) is found
/// at 16.
const RELEASE_SCOPE_ACTIONS: usize = 16;

/// Steps explored without faults: a fast takeover answers after 8.
const DEEP_ACTIONS: usize = 8;

/// Runs the correct protocol over every behaviour of at most `actions`
/// steps (each a tick, a delivery, a send or a fault) and fails on a split
/// brain. Returns the reachability properties (`sometimes`) it reached.
fn check_correct(name: &str, params: Params, actions: usize) -> Vec<&'static str> {
    let model = PeerPromises::new(Variant::Correct, params);
    let start = Instant::now();
    // stateright counts the initial state as depth 1 and checks the states
    // shallower than the target.
    let checker = model
        .clone()
        .checker()
        .threads(2)
        .target_max_depth(actions + 2)
        .spawn_bfs()
        .join();
    eprintln!(
        "correct, {name}: {} unique states ({} generated), all runs of <= {actions} steps, {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        start.elapsed()
    );
    if let Some(path) = checker.discovery(SPLIT_BRAIN) {
        panic!(
            "split brain in the correct protocol ({name}):\n{}",
            model.explain(&path)
        );
    }
    let mut reached = Vec::new();
    for property in [FAST, RELEASED] {
        if let Some(path) = checker.discovery(property) {
            eprintln!("{property} ({name}):\n{}", model.explain(&path));
            reached.push(property);
        }
    }
    reached
}

/// The full model: every fault kind (one fault begun per run), renewals,
/// member changes, every agent may take over.
#[test]
fn correct_protocol_has_no_split_brain_within_the_bound() {
    check_correct("all faults", Params::small(), FULL_ACTIONS);
}

/// Without faults (loss, duplication, reordering and drift stay), deeper: a
/// fast takeover is reachable, so the check cannot pass by never failing over.
#[test]
fn correct_protocol_fails_over_fast_without_split_brain() {
    let params = Params {
        faults: Faults::NONE,
        ..Params::small()
    };
    assert!(
        check_correct("no faults", params, DEEP_ACTIONS).contains(&FAST),
        "the bound is trivial: no fast takeover ever answers"
    );
}

/// The search for one bug is scoped to the behaviours it needs (agent 1 takes
/// over; no renewals; member changes and crashes only where the bug is about
/// them; two ticks of real time): the breadth-first search then reaches the bug's depth in seconds
/// and the trace it prints is the shortest within that scope.
fn scoped(variant: Variant) -> Params {
    if is_release(variant) {
        return release_scope(variant);
    }
    // (e) needs a second takeover, from the first new leader, a tick later.
    let second = variant == Variant::UnackedMemberIgnored;
    Params {
        takeover_by: if second { 0b110 } else { 0b010 },
        renew: false,
        member_changes: variant == Variant::DropBeforeRemoval,
        faults: Faults {
            crash: variant == Variant::RestartNoWait,
            ..Faults::NONE
        },
        max_time: if second { 3 } else { 2 },
        ..Params::small()
    }
}

fn is_release(variant: Variant) -> bool {
    matches!(
        variant,
        Variant::ReleaseBeforeAnswerFrom
            | Variant::IgnoreAllPromisesAfterRelease
            | Variant::ReleaseBeforeFenceClosed
            | Variant::AckStaleHeartbeats
    )
}

/// Rule 9's scope: releases on, agent 1 may take over fast and agents 1 and 2
/// may acquire a released record, no renewals, member changes or faults
/// (agent 0 that does nothing is as good as frozen), two ticks, three writes.
/// For (f) agent 2 is not in the initial record: it never acked agent 0.
fn release_scope(variant: Variant) -> Params {
    let hole = narrow(variant);
    Params {
        takeover_by: if hole { 0b010 } else { 0b110 },
        release_by: if hole { 0b010 } else { 0b111 },
        acquire_by: if hole { 0b100 } else { 0b110 },
        renew: false,
        member_changes: false,
        faults: Faults::NONE,
        max_time: 2,
        max_version: 4,
        release: true,
        initial_members: if hole { 0b011 } else { 0b111 },
        ..Params::small()
    }
}

/// (f) and (i) share a narrower scope: agent 2 is not in the initial record
/// (it never acked agent 0), only agent 1 takes over and releases, only agent
/// 2 acquires. The correct protocol is checked there once, deeper than both
/// bugs ([`rule_9_holds_in_the_narrow_scope`]).
fn narrow(variant: Variant) -> bool {
    matches!(
        variant,
        Variant::ReleaseBeforeAnswerFrom | Variant::AckStaleHeartbeats
    )
}

fn finds_split_brain(variant: Variant) {
    let model = PeerPromises::new(variant, scoped(variant));
    let start = Instant::now();
    let checker = model
        .clone()
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyOf([SPLIT_BRAIN].into()))
        .spawn_bfs()
        .join();
    let path = checker
        .discovery(SPLIT_BRAIN)
        .unwrap_or_else(|| panic!("{variant:?}: the checker found no split brain"));
    eprintln!(
        "{variant:?}: split brain after {} unique states, {:?}; shortest trace:\n{}",
        checker.unique_state_count(),
        start.elapsed(),
        model.explain(&path)
    );
    if narrow(variant) {
        return;
    }
    // The same scope, the correct protocol, as deep as the bug (at most
    // SCOPE_ACTIONS, to stay in the time budget).
    let steps = path.into_actions().len().min(SCOPE_ACTIONS);
    let reached = check_correct(&format!("scope of {variant:?}"), scoped(variant), steps);
    if is_release(variant) {
        assert!(
            reached.contains(&RELEASED),
            "{variant:?}'s scope is trivial: no acquirer of a released record answers"
        );
    }
}

#[test]
fn a_new_leader_answering_right_after_its_cas_is_caught() {
    finds_split_brain(Variant::AnswerRightAfterCas);
}

#[test]
fn dropping_a_member_before_the_removal_cas_succeeded_is_caught() {
    finds_split_brain(Variant::DropBeforeRemoval);
}

#[test]
fn eps_zero_with_clock_drift_is_caught() {
    finds_split_brain(Variant::NoEpsilon);
}

#[test]
fn a_new_leader_opening_before_its_members_acked_is_caught() {
    finds_split_brain(Variant::UnackedMemberIgnored);
}

#[test]
fn a_restarted_agent_answering_without_waiting_p_is_caught() {
    finds_split_brain(Variant::RestartNoWait);
}

#[test]
fn rule_9_releasing_before_answer_from_is_caught() {
    finds_split_brain(Variant::ReleaseBeforeAnswerFrom);
}

#[test]
fn rule_9_ignoring_every_promise_after_an_early_release_is_caught() {
    finds_split_brain(Variant::IgnoreAllPromisesAfterRelease);
}

#[test]
fn rule_9_releasing_before_the_fence_is_closed_is_caught() {
    finds_split_brain(Variant::ReleaseBeforeFenceClosed);
}

#[test]
fn acking_a_heartbeat_older_than_the_known_record_is_caught() {
    finds_split_brain(Variant::AckStaleHeartbeats);
}

/// The correct protocol in the scope of (f) and (i), as deep as the deeper
/// of them; an acquirer of a released record does answer there (after agent
/// 1 took over fast and released at its `answer_from`).
#[test]
fn rule_9_holds_in_the_narrow_scope() {
    let params = release_scope(Variant::ReleaseBeforeAnswerFrom);
    let reached = check_correct("narrow release scope", params, RELEASE_SCOPE_ACTIONS);
    assert!(
        reached.contains(&RELEASED),
        "the narrow scope is trivial: no acquirer of a released record answers"
    );
}

/// The checker's model is deterministic in what it enables: a smoke test of
/// the initial state (agent 0 answers, nobody else).
#[test]
fn initial_state_has_one_answerer() {
    let model = PeerPromises::new(Variant::Correct, Params::small());
    for s in model.init_states() {
        assert_eq!(model.answerers(&s), vec![0]);
    }
}
