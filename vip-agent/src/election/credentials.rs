//! Which kubeconfig the election's requests carry: `--kubeconfig` (admin)
//! or, while that one is forbidden on the Lease, `--super-admin-kubeconfig`.
//!
//! Why: on the first control-plane node of kubeadm >= 1.29, admin.conf
//! (group `kubeadm:cluster-admins`) has no rights until kubeadm creates its
//! ClusterRoleBinding, and kubeadm creates it through the control-plane
//! endpoint, the VIP, which nobody answers before an agent leads. kubeadm's
//! super-admin.conf (group `system:masters`) works from the start. So: a 403
//! on admin with a super-admin kubeconfig at hand switches to it and sends
//! the same request again; while on super-admin an admin probe (a GET of the
//! Lease) runs every retry period, and the first allowed answer switches
//! back. A 403 with nothing to fall back to stays a 403 (the election stops,
//! as without this).
//!
//! Pure logic, no I/O: [`Selector`] is fed the answers and says what to do;
//! `fallback.rs` does the requests. Requests are sequential (one elector), so
//! one switch never leaves two clients writing: a 403 was refused before
//! anything was stored, and the same request, sent again with super-admin
//! inside the same call, is still covered by the send time the elector took
//! before the first attempt (the fence argument does not change).

use super::store::StoreError;

/// Which kubeconfig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kubeconfig {
    /// `--kubeconfig` (kubeadm's admin.conf by default).
    Admin,
    /// `--super-admin-kubeconfig` (kubeadm's super-admin.conf by default).
    SuperAdmin,
}

impl Kubeconfig {
    pub const ALL: [Self; 2] = [Self::Admin, Self::SuperAdmin];

    /// The metric label (`vip_agent_credentials{kubeconfig="..."}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::SuperAdmin => "super-admin",
        }
    }
}

/// What an answer says about the credentials that sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Authorized: a success, or an answer RBAC let through (404, 409, 410).
    Allowed,
    /// 403: RBAC refused the verb.
    Forbidden,
    /// Timeout, transport error, 5xx, 401: says nothing about RBAC.
    Inconclusive,
}

impl Answer {
    pub fn of<T>(r: &Result<T, StoreError>) -> Self {
        match r {
            Ok(_) => Self::Allowed,
            Err(
                StoreError::NotFound
                | StoreError::AlreadyExists
                | StoreError::Conflict
                | StoreError::Gone,
            ) => Self::Allowed,
            Err(StoreError::Forbidden(_)) => Self::Forbidden,
            Err(StoreError::Timeout | StoreError::Other(_)) => Self::Inconclusive,
        }
    }
}

/// What the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The answer stands: hand it to the election.
    Keep,
    /// Switched admin -> super-admin (log, metric): send the same request
    /// again with super-admin.
    FallBack,
    /// Already on super-admin (this request left with admin before the
    /// switch): send it again with super-admin, nothing to report.
    Retry,
    /// Switched super-admin -> admin (log, metric).
    Restore,
    /// 403 and nothing to fall back to: the 403 stands (with the fix).
    Refused,
}

/// The credentials state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    using: Kubeconfig,
}

impl Default for Selector {
    fn default() -> Self {
        Self::new()
    }
}

impl Selector {
    /// Starts on admin.
    pub fn new() -> Self {
        Self {
            using: Kubeconfig::Admin,
        }
    }

    /// The kubeconfig the next request carries.
    pub fn using(&self) -> Kubeconfig {
        self.using
    }

    /// A request of the election, sent with `sent_with`, got `answer`;
    /// `super_admin` says whether a super-admin client is at hand (only
    /// asked about on a 403 from admin).
    pub fn on_answer(&mut self, sent_with: Kubeconfig, answer: Answer, super_admin: bool) -> Step {
        match (sent_with, answer) {
            (Kubeconfig::Admin, Answer::Forbidden) if !super_admin => Step::Refused,
            (Kubeconfig::Admin, Answer::Forbidden) => match self.using {
                Kubeconfig::Admin => {
                    self.using = Kubeconfig::SuperAdmin;
                    Step::FallBack
                }
                Kubeconfig::SuperAdmin => Step::Retry,
            },
            // Even system:masters is refused: nothing else to try.
            (Kubeconfig::SuperAdmin, Answer::Forbidden) => Step::Refused,
            // An admin request that went through proves admin works.
            (Kubeconfig::Admin, Answer::Allowed) => self.on_probe(Answer::Allowed),
            (_, Answer::Allowed | Answer::Inconclusive) => Step::Keep,
        }
    }

    /// The admin probe (run only while on super-admin) got `answer`.
    pub fn on_probe(&mut self, answer: Answer) -> Step {
        match (self.using, answer) {
            (Kubeconfig::SuperAdmin, Answer::Allowed) => {
                self.using = Kubeconfig::Admin;
                Step::Restore
            }
            _ => Step::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kubeconfig::{Admin, SuperAdmin};
    use super::*;

    #[test]
    fn answers_classified_by_what_rbac_said() {
        let a = |r: Result<(), StoreError>| Answer::of(&r);
        assert_eq!(a(Ok(())), Answer::Allowed);
        for e in [
            StoreError::NotFound,
            StoreError::AlreadyExists,
            StoreError::Conflict,
            StoreError::Gone,
        ] {
            assert_eq!(a(Err(e)), Answer::Allowed);
        }
        assert_eq!(a(Err(StoreError::Forbidden("x".into()))), Answer::Forbidden);
        assert_eq!(a(Err(StoreError::Timeout)), Answer::Inconclusive);
        assert_eq!(
            a(Err(StoreError::Other("401".into()))),
            Answer::Inconclusive
        );
    }

    /// kubeadm's order: 403 on admin -> super-admin -> the binding appears ->
    /// the probe is allowed -> admin again; a later 403 falls back again.
    #[test]
    fn bootstrap_round_trip() {
        let mut s = Selector::new();
        assert_eq!(s.using(), Admin);
        assert_eq!(s.on_answer(Admin, Answer::Allowed, true), Step::Keep);
        assert_eq!(s.on_answer(Admin, Answer::Forbidden, true), Step::FallBack);
        assert_eq!(s.using(), SuperAdmin);
        // Requests with super-admin go through; the probe is still refused.
        assert_eq!(s.on_answer(SuperAdmin, Answer::Allowed, true), Step::Keep);
        assert_eq!(s.on_probe(Answer::Forbidden), Step::Keep);
        assert_eq!(s.on_probe(Answer::Inconclusive), Step::Keep);
        assert_eq!(s.using(), SuperAdmin);
        // The binding exists: the next probe switches back, once.
        assert_eq!(s.on_probe(Answer::Allowed), Step::Restore);
        assert_eq!(s.using(), Admin);
        assert_eq!(s.on_probe(Answer::Allowed), Step::Keep);
        // The binding deleted later: back to super-admin.
        assert_eq!(s.on_answer(Admin, Answer::Forbidden, true), Step::FallBack);
        assert_eq!(s.using(), SuperAdmin);
    }

    #[test]
    fn forbidden_without_super_admin_stays_forbidden() {
        let mut s = Selector::new();
        assert_eq!(s.on_answer(Admin, Answer::Forbidden, false), Step::Refused);
        assert_eq!(s.using(), Admin);
        // An inconclusive answer never switches.
        assert_eq!(s.on_answer(Admin, Answer::Inconclusive, true), Step::Keep);
        assert_eq!(s.using(), Admin);
    }

    #[test]
    fn super_admin_refused_too_is_the_end() {
        let mut s = Selector::new();
        assert_eq!(s.on_answer(Admin, Answer::Forbidden, true), Step::FallBack);
        assert_eq!(
            s.on_answer(SuperAdmin, Answer::Forbidden, true),
            Step::Refused
        );
    }

    #[test]
    fn late_admin_answers() {
        let mut s = Selector::new();
        s.on_answer(Admin, Answer::Forbidden, true);
        // A request that left with admin before the switch and got 403:
        // again with super-admin, no second switch.
        assert_eq!(s.on_answer(Admin, Answer::Forbidden, true), Step::Retry);
        // One that went through proves admin works.
        assert_eq!(s.on_answer(Admin, Answer::Allowed, true), Step::Restore);
        assert_eq!(s.using(), Admin);
        // The probe never switches while on admin.
        assert_eq!(s.on_probe(Answer::Forbidden), Step::Keep);
        assert_eq!(s.using(), Admin);
    }
}
