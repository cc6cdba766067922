//! The object store: Leases, one global resourceVersion, a bounded event history, and a
//! broadcast of every change to the watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::Resource;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;
use tokio::sync::broadcast;

/// The kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was replaced.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    /// What happened.
    pub kind: EventType,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The object after the change (before it, for a deletion, with the deletion's rv).
    pub object: Lease,
    /// The serialized watch line (`{"type":..,"object":..}\n`).
    pub(crate) line: Bytes,
}

impl StoreEvent {
    fn new(kind: EventType, object: Lease, rv: u64) -> Self {
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        Self {
            line: watch_line(kind.as_str(), &with_type_meta(&object)),
            kind,
            namespace,
            name,
            rv,
            object,
        }
    }
}

/// Serializes a watch event line.
pub(crate) fn watch_line(kind: &str, object: &serde_json::Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a JSON value always serializes");
    v.push(b'\n');
    Bytes::from(v)
}

/// A Lease as JSON with `kind` and `apiVersion` set, as the server answers single objects.
pub(crate) fn with_type_meta(lease: &Lease) -> serde_json::Value {
    let mut v = serde_json::to_value(lease).expect("a Lease always serializes");
    v["apiVersion"] = json!(Lease::API_VERSION);
    v["kind"] = json!(Lease::KIND);
    v
}

pub(crate) type Key = (String, String);

pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Lease>,
    history: VecDeque<Arc<StoreEvent>>,
    history_limit: usize,
    /// Events with `rv <= compacted` are no longer in `history`.
    compacted: u64,
    tx: broadcast::Sender<Arc<StoreEvent>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            // A fresh cluster never starts at 0; start somewhere recognisable.
            rv: 1000,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1000,
            tx,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<&Lease> {
        self.objects.get(&(ns.to_owned(), name.to_owned()))
    }

    pub fn list(&self, ns: Option<&str>) -> impl Iterator<Item = &Lease> {
        self.objects
            .iter()
            .filter(move |((n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, l)| l)
    }

    /// Events with `rv > after`, oldest first. Callers check `after >= compacted()` first.
    pub fn history_after(&self, after: u64) -> impl Iterator<Item = &Arc<StoreEvent>> {
        self.history.iter().filter(move |e| e.rv > after)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.tx.subscribe()
    }

    /// Drops the whole event history: a watch from any rv older than now gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Stores `lease` (whose namespace and name must be set) with a new resourceVersion and
    /// publishes the event. Returns the stored object.
    pub fn commit(&mut self, mut lease: Lease, kind: EventType) -> Lease {
        self.rv += 1;
        lease.metadata.resource_version = Some(self.rv.to_string());
        let key = (
            lease.metadata.namespace.clone().unwrap_or_default(),
            lease.metadata.name.clone().unwrap_or_default(),
        );
        let event = Arc::new(StoreEvent::new(kind, lease.clone(), self.rv));
        match kind {
            EventType::Deleted => {
                self.objects.remove(&key);
            }
            EventType::Added | EventType::Modified => {
                self.objects.insert(key, lease.clone());
            }
        }
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(event);
        lease
    }
}
