//! Classify: recognises Kubernetes records (`k8s.event…` events and `pod.log/…` container logs)
//! and gives each event a category (`err_image_pull`, `back_off`, `started`, …) from its text.
//!
//! The rules are data: a built-in table, taken from the event templates in the Kubernetes sources,
//! that the config can extend. All patterns are matched in one pass over MSG (Aho-Corasick).

use std::borrow::Cow;

use serde::Deserialize;

use crate::parse::Message;

/// What kind of Kubernetes record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K8sKind {
    /// An API event (`k8s.event`, `k8s.event/<ns>/<object>/`).
    Event,
    /// A container log line (`pod.log/<ns>/<pod>/<container>`).
    PodLog,
}

impl K8sKind {
    /// `event` or `pod_log`, as in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            K8sKind::Event => "event",
            K8sKind::PodLog => "pod_log",
        }
    }
}

/// A category, as an index into [`Classifier::categories`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Category(pub u16);

/// A rule from the config: events whose MSG contains any of `contains` get `category`.
/// Config rules are tried before the built-in table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Category name (`[a-z0-9_]+`), new or built-in.
    pub category: String,
    /// Substrings; any one of them matches.
    pub contains: Vec<String>,
}

/// The Kubernetes part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sInfo<'a> {
    /// Event or pod log.
    pub kind: K8sKind,
    /// Events only.
    pub category: Option<Category>,
    /// From SD `namespace_name`, else from APP-NAME.
    pub namespace: Option<Cow<'a, str>>,
    /// From SD `object_name`, else from APP-NAME.
    pub object: Option<Cow<'a, str>>,
    /// From SD `container_name`, else from APP-NAME.
    pub container: Option<Cow<'a, str>>,
    /// From SD `vm_id`.
    pub vm_id: Option<Cow<'a, str>>,
}

/// Error in the classification rules from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// The classifier: built-in rules plus the config's.
#[derive(Debug, Clone)]
pub struct Classifier {
    categories: Vec<String>,
}

impl Classifier {
    /// Built-in rules only.
    pub fn builtin() -> Self {
        todo!()
    }

    /// Config rules (tried first) plus the built-in ones.
    pub fn with_rules(extra: &[Rule]) -> Result<Self, RuleError> {
        let _ = extra;
        todo!()
    }

    /// Every category name, indexed by [`Category`] (`other` included).
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The name of a category.
    pub fn name(&self, c: Category) -> &str {
        &self.categories[c.0 as usize]
    }

    /// The Kubernetes part of `msg`, or `None` for other senders.
    pub fn classify<'a>(&self, msg: &Message<'a>) -> Option<K8sInfo<'a>> {
        let _ = msg;
        todo!()
    }
}
