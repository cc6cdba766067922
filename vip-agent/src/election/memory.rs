//! In-memory [`LeaseStore`] for deterministic tests: one shared "API server"
//! (`MemoryServer`) and per-node clients with fault injection and request logs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::core::WatchEvent;
use tokio::sync::mpsc;

use super::store::{LeaseEvents, LeaseStore, StoreError};
use crate::clock::MonoTime;

/// How a node's connection to the API server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every request fails at once; watches end.
    Fail,
    /// Requests never answer (and are not applied); watch events are lost.
    Hang,
}

type Subscriber = (
    usize,
    mpsc::UnboundedSender<Result<WatchEvent<Lease>, StoreError>>,
);

#[derive(Default)]
struct ServerState {
    lease: Option<Lease>,
    rv: u64,
    history: Vec<(u64, WatchEvent<Lease>)>,
    /// Watch versions older than this are Gone.
    compacted_below: u64,
    subs: Vec<Subscriber>,
}

#[derive(Clone, Default)]
pub struct MemoryServer {
    state: Arc<Mutex<ServerState>>,
    modes: Arc<Mutex<Vec<Mode>>>,
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Req {
    pub op: &'static str,
    pub at: MonoTime,
}

#[derive(Clone)]
pub struct MemoryClient {
    server: MemoryServer,
    id: usize,
    clock: TestClockRef,
    pub log: Arc<Mutex<Vec<Req>>>,
    /// Errors returned (in order) by the next requests, before anything else.
    pub inject: Arc<Mutex<VecDeque<(&'static str, StoreError)>>>,
    /// Delay before a request is applied and before its answer returns.
    pub latency: Arc<Mutex<(Duration, Duration)>>,
}

pub type TestClockRef = Arc<dyn Fn() -> MonoTime + Send + Sync>;

impl MemoryServer {
    pub fn client(&self, clock: TestClockRef) -> MemoryClient {
        let mut modes = self.modes.lock().expect("lock");
        modes.push(Mode::Up);
        MemoryClient {
            server: self.clone(),
            id: modes.len() - 1,
            clock,
            log: Arc::default(),
            inject: Arc::default(),
            latency: Arc::default(),
        }
    }

    pub fn set_mode(&self, id: usize, mode: Mode) {
        self.modes.lock().expect("lock")[id] = mode;
        if mode == Mode::Fail {
            // End that node's watches.
            self.state
                .lock()
                .expect("lock")
                .subs
                .retain(|(sid, _)| *sid != id);
        }
    }

    fn mode(&self, id: usize) -> Mode {
        self.modes.lock().expect("lock")[id]
    }

    pub fn lease(&self) -> Option<Lease> {
        self.state.lock().expect("lock").lease.clone()
    }

    /// Write as an outsider (e.g. an admin or another agent), notifying watchers.
    pub fn put(&self, mut lease: Lease) -> Lease {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        lease.metadata.resource_version = Some(st.rv.to_string());
        st.lease = Some(lease.clone());
        let rv = st.rv;
        let ev = if rv == 1 {
            WatchEvent::Added(lease.clone())
        } else {
            WatchEvent::Modified(lease.clone())
        };
        Self::publish(&mut st, &self.modes.lock().expect("lock"), rv, ev);
        lease
    }

    /// Delete as an outsider, notifying watchers.
    pub fn delete(&self, _expected: Lease) {
        let mut st = self.state.lock().expect("lock");
        if let Some(mut l) = st.lease.take() {
            st.rv += 1;
            l.metadata.resource_version = Some(st.rv.to_string());
            let rv = st.rv;
            Self::publish(
                &mut st,
                &self.modes.lock().expect("lock"),
                rv,
                WatchEvent::Deleted(l),
            );
        }
    }

    pub fn compact(&self) {
        let mut st = self.state.lock().expect("lock");
        st.compacted_below = st.rv + 1;
        st.history.clear();
    }

    fn publish(st: &mut ServerState, modes: &[Mode], rv: u64, ev: WatchEvent<Lease>) {
        st.history.push((rv, ev.clone()));
        st.subs.retain(|(id, tx)| {
            if modes[*id] == Mode::Hang {
                return true; // event lost on a dead connection
            }
            tx.send(Ok(ev.clone())).is_ok()
        });
    }

    fn write(&self, op: &'static str, lease: &Lease, create: bool) -> Result<Lease, StoreError> {
        let mut st = self.state.lock().expect("lock");
        if create {
            if st.lease.is_some() {
                return Err(StoreError::AlreadyExists);
            }
        } else {
            let Some(cur) = &st.lease else {
                return Err(StoreError::NotFound);
            };
            if lease.metadata.resource_version != cur.metadata.resource_version {
                return Err(StoreError::Conflict);
            }
        }
        let _ = op;
        st.rv += 1;
        let rv = st.rv;
        let mut l = lease.clone();
        l.metadata.resource_version = Some(rv.to_string());
        st.lease = Some(l.clone());
        let ev = if create {
            WatchEvent::Added(l.clone())
        } else {
            WatchEvent::Modified(l.clone())
        };
        Self::publish(&mut st, &self.modes.lock().expect("lock"), rv, ev);
        Ok(l)
    }
}

impl MemoryClient {
    pub fn requests(&self, op: &str) -> Vec<MonoTime> {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| op.is_empty() || r.op == op)
            .map(|r| r.at)
            .collect()
    }

    async fn begin(&self, op: &'static str) -> Result<(), StoreError> {
        self.log.lock().expect("lock").push(Req {
            op,
            at: (self.clock)(),
        });
        let injected = {
            let mut q = self.inject.lock().expect("lock");
            match q.front() {
                Some((o, _)) if *o == op || o.is_empty() => q.pop_front().map(|(_, e)| e),
                _ => None,
            }
        };
        if let Some(e) = injected {
            return Err(e);
        }
        match self.server.mode(self.id) {
            Mode::Up => {}
            Mode::Fail => return Err(StoreError::Other("connection refused".into())),
            Mode::Hang => std::future::pending::<()>().await,
        }
        let d = self.latency.lock().expect("lock").0;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }

    async fn end<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        let d = self.latency.lock().expect("lock").1;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        if self.server.mode(self.id) == Mode::Hang {
            std::future::pending::<()>().await;
        }
        r
    }
}

impl LeaseStore for MemoryClient {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.begin("get").await?;
        let r = self.server.lease();
        self.end(Ok(r)).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.begin("create").await?;
        let r = self.server.write("create", lease, true);
        self.end(r).await
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.begin("replace").await?;
        let r = self.server.write("replace", lease, false);
        self.end(r).await
    }

    async fn watch(&self, resource_version: &str) -> Result<LeaseEvents, StoreError> {
        self.begin("watch").await?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut st = self.server.state.lock().expect("lock");
            if resource_version.is_empty() {
                if let Some(l) = &st.lease {
                    let _ = tx.send(Ok(WatchEvent::Added(l.clone())));
                }
            } else {
                let from: u64 = resource_version
                    .parse()
                    .map_err(|_| StoreError::Other("bad resourceVersion".into()))?;
                if from + 1 < st.compacted_below {
                    return Err(StoreError::Gone);
                }
                for (rv, ev) in &st.history {
                    if *rv > from {
                        let _ = tx.send(Ok(ev.clone()));
                    }
                }
            }
            st.subs.push((self.id, tx));
        }
        let stream =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
            );
        self.end(Ok(stream.boxed())).await
    }
}
