//! `metav1.Status` bodies with the messages and reasons kube-apiserver uses.

use serde_json::{Value, json};

pub(crate) const GROUP: &str = "coordination.k8s.io";
pub(crate) const RESOURCE: &str = "leases";
pub(crate) const QUALIFIED: &str = "leases.coordination.k8s.io";
pub(crate) const OPTIMISTIC_LOCK: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// An error answer: a `Status` with `status: Failure`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Whether a real server would also refuse this request because the request itself is
    /// wrong (as opposed to a normal outcome such as NotFound, Conflict or an injected fault).
    pub client_fault: bool,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            client_fault: false,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn client(mut self) -> Self {
        self.client_fault = true;
        self
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // As kube-apiserver for an error that is not a Status: no reason.
            if let Some(m) = v.as_object_mut() {
                m.remove("reason");
            }
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    pub fn not_found(name: &str) -> Self {
        Self::new(404, "NotFound", format!("{QUALIFIED} \"{name}\" not found"))
            .with_details(lease_details(name))
    }

    /// What kube-apiserver answers for an error that is no `metav1.Status`
    /// (a plain error from storage): the code and the message, no reason, no
    /// details. Only the request can cause one here.
    pub fn unstructured(code: u16, message: &str) -> Self {
        Self::new(code, "", message).client()
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
        .client()
    }

    pub fn already_exists(name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{QUALIFIED} \"{name}\" already exists"),
        )
        .with_details(lease_details(name))
    }

    pub fn conflict(name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {QUALIFIED} \"{name}\": {why}"),
        )
        .with_details(lease_details(name))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message).client()
    }

    /// 422 for a Lease (kind `qualified_kind`, e.g. `Lease.coordination.k8s.io` or
    /// `leases.coordination.k8s.io`); `causes` are (field, cause reason, message).
    pub fn invalid(
        qualified_kind: &str,
        kind: &str,
        group: &str,
        name: &str,
        causes: &[(String, &'static str, String)],
    ) -> Self {
        let list = causes
            .iter()
            .map(|(field, _, msg)| format!("{field}: {msg}"))
            .collect::<Vec<_>>();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let causes_json = causes
            .iter()
            .map(|(field, reason, msg)| json!({"reason": reason, "message": msg, "field": field}))
            .collect::<Vec<_>>();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes_json}))
        .client()
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
        .client()
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml (got {content_type:?})"
            ),
        )
        .client()
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
        .client()
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
        .client()
    }

    pub fn internal(message: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message}]}))
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn forbidden(user: &str, verb: &str, name: Option<&str>, namespace: Option<&str>) -> Self {
        let subject = match name {
            Some(n) => format!("{QUALIFIED} \"{n}\""),
            None => QUALIFIED.to_owned(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let mut details = json!({"group": GROUP, "kind": RESOURCE});
        if let Some(n) = name {
            details["name"] = json!(n);
        }
        Self::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{RESOURCE}\" \
                 in API group \"{GROUP}\" {scope}"
            ),
        )
        .with_details(details)
    }

    /// An injected server-side failure with the body a real server sends for that code.
    pub fn injected(code: u16) -> Self {
        match code {
            500 => Self::internal("injected fault"),
            429 => Self::new(
                429,
                "TooManyRequests",
                "too many requests, please try again later",
            )
            .with_details(json!({"retryAfterSeconds": 1})),
            504 => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            )
            .with_details(json!({"retryAfterSeconds": 1})),
            c if (500..600).contains(&c) && c != 503 => {
                Self::new(c, "InternalError", "Internal error occurred: injected fault")
            }
            _ => Self::new(503, "ServiceUnavailable", "the server is currently unable to handle the request"),
        }
    }
}

pub(crate) fn lease_details(name: &str) -> Value {
    json!({"name": name, "group": GROUP, "kind": RESOURCE})
}

/// The body of a successful DELETE of a Lease.
pub(crate) fn delete_success(name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": GROUP, "kind": RESOURCE, "uid": uid},
    })
}
