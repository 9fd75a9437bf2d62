//! Classify: recognises Kubernetes records (`k8s.event…` events and `pod.log/…` container logs)
//! and gives each event a category (`err_image_pull`, `back_off`, `started`, …) from its text.
//!
//! The rules are data: a built-in table, taken from the event templates in the Kubernetes sources,
//! that the config can extend. All patterns are matched in one pass over MSG (Aho-Corasick).
//!
//! # Which records
//!
//! * APP-NAME `k8s.event` or `k8s.event/…` → [`K8sKind::Event`], with a category.
//! * APP-NAME `pod.log/…` → [`K8sKind::PodLog`], no category (the matcher does not run).
//! * anything else → `None`.
//!
//! # Where the names come from
//!
//! Namespace, object, container and vm_id come from the SD element `kubernetes@47450`
//! ([`SD_ID`]): params `namespace_name` (else `namespace`), `object_name` (else `object`, else
//! `pod`), `container_name` (else `container`) and `vm_id`. A param that is present wins even when
//! its value is empty (`namespace_name=""` is a cluster-scoped object such as a Node).
//!
//! Only a field the SD lacks is read from APP-NAME, `k8s.event/<ns>/<object>/<container>` or
//! `pod.log/<ns>/<pod>/<container>`. PKS cuts APP-NAME to 48 bytes, so such a fallback gives what
//! the APP-NAME still holds: a segment may be cut short, and a segment that was cut off entirely is
//! `None`. An empty segment is an empty value: `k8s.event//vm-1/` gives namespace `""` (Node
//! events), the same value the SD would carry. `vm_id` is never read from APP-NAME.
//!
//! # Categories
//!
//! Each rule is a category and a list of substrings. Config rules ([`Classifier::with_rules`])
//! come first, then the built-in table (`rules.rs`, one comment per pattern naming the Kubernetes
//! source it comes from). All patterns of all rules are found in one Aho-Corasick pass over MSG;
//! when several rules match, the one earliest in rule order wins, wherever its match is in the
//! text. Matching is case-sensitive (see `rules.rs` for why). No match → `other`.
//!
//! Nothing here allocates on the happy path: names borrow from the frame; only an SD value with
//! escapes may be unescaped into a `String` by the caller.

mod rules;

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use serde::Deserialize;

use crate::parse::Message;

/// SD-ID of the element that PKS / TKGI sinks put the Kubernetes names in.
pub const SD_ID: &str = "kubernetes@47450";

/// Name of the category of events that no rule matches.
pub const OTHER: &str = "other";

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

    /// The kind an APP-NAME stands for, or `None` for other senders.
    pub fn from_app_name(app_name: &str) -> Option<K8sKind> {
        split_app_name(app_name).map(|(kind, _)| kind)
    }
}

/// The kind, and the `/`-separated part after the prefix (`None` for a plain `k8s.event`).
fn split_app_name(app_name: &str) -> Option<(K8sKind, Option<&str>)> {
    if let Some(rest) = app_name.strip_prefix("k8s.event") {
        if rest.is_empty() {
            return Some((K8sKind::Event, None));
        }
        return rest.strip_prefix('/').map(|r| (K8sKind::Event, Some(r)));
    }
    app_name
        .strip_prefix("pod.log/")
        .map(|r| (K8sKind::PodLog, Some(r)))
}

/// A category, as an index into [`Classifier::categories`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Category(pub u16);

/// A rule from the config: events whose MSG contains any of `contains` get `category`.
/// Config rules are tried before the built-in table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Category name (`[a-z][a-z0-9_]*`), new or built-in (`other` is allowed too).
    pub category: String,
    /// Substrings (case-sensitive, non-empty); any one of them matches.
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

/// The Kubernetes values found in the SD element [`SD_ID`], aliases already resolved.
///
/// `None` means the SD does not have the value (APP-NAME is then used, except for `vm_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdValues<'a> {
    /// `namespace_name`, else `namespace`.
    pub namespace: Option<Cow<'a, str>>,
    /// `object_name`, else `object`, else `pod`.
    pub object: Option<Cow<'a, str>>,
    /// `container_name`, else `container`.
    pub container: Option<Cow<'a, str>>,
    /// `vm_id`.
    pub vm_id: Option<Cow<'a, str>>,
}

impl<'a> SdValues<'a> {
    /// Collects the values from the params of the SD element, in one pass.
    ///
    /// `params` yields `(name, value)` in wire order; `value` turns a value into text and is
    /// called only for the params that are kept (so only those are unescaped). For each field the
    /// preferred name wins over its aliases whatever the order, and the first param of a name wins
    /// over a repeat of it.
    pub fn from_params<N, V, I, F>(params: I, mut value: F) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        F: FnMut(V) -> Cow<'a, str>,
    {
        let mut out = SdValues::default();
        // Rank of the name each field was taken from (0 = preferred); u8::MAX = not yet set.
        let mut ranks = [u8::MAX; 4];
        for (name, v) in params {
            let (slot, rank) = match name.as_ref() {
                "namespace_name" => (0, 0),
                "namespace" => (0, 1),
                "object_name" => (1, 0),
                "object" => (1, 1),
                "pod" => (1, 2),
                "container_name" => (2, 0),
                "container" => (2, 1),
                "vm_id" => (3, 0),
                _ => continue,
            };
            if rank >= ranks[slot] {
                continue;
            }
            ranks[slot] = rank;
            let text = Some(value(v));
            match slot {
                0 => out.namespace = text,
                1 => out.object = text,
                2 => out.container = text,
                _ => out.vm_id = text,
            }
            if ranks == [0; 4] {
                break;
            }
        }
        out
    }
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
///
/// Cheap to clone (the automaton is shared).
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Category names; the last one is always `other`.
    categories: Vec<String>,
    /// One automaton over all patterns of all rules.
    matcher: AhoCorasick,
    /// Pattern id → rule index (rules in priority order: config, then built-in).
    pattern_rule: Vec<u32>,
    /// Rule index → category.
    rule_category: Vec<Category>,
}

/// Whether `name` is `[a-z][a-z0-9_]*`.
fn valid_category_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

impl Classifier {
    /// Built-in rules only.
    pub fn builtin() -> Self {
        match Self::with_rules(&[]) {
            Ok(c) => c,
            // The built-in table is checked by the tests; an automaton over a few hundred
            // bytes of patterns cannot exceed aho-corasick's limits.
            Err(e) => unreachable!("built-in classify rules: {e}"),
        }
    }

    /// Config rules (tried first) plus the built-in ones.
    ///
    /// Errors name the rule by its index in `extra` (`rules[2]`, 0-based): a category that is not
    /// `[a-z][a-z0-9_]*`, a rule without patterns, or an empty pattern.
    pub fn with_rules(extra: &[Rule]) -> Result<Self, RuleError> {
        for (i, rule) in extra.iter().enumerate() {
            if !valid_category_name(&rule.category) {
                return Err(RuleError(format!(
                    "classify rules[{i}]: category {:?} must match [a-z][a-z0-9_]* \
                     (lowercase letter, then lowercase letters, digits or _)",
                    rule.category
                )));
            }
            if rule.contains.is_empty() {
                return Err(RuleError(format!(
                    "classify rules[{i}] (category {:?}): `contains` is empty, give at least one \
                     substring",
                    rule.category
                )));
            }
            if let Some(j) = rule.contains.iter().position(|p| p.is_empty()) {
                return Err(RuleError(format!(
                    "classify rules[{i}] (category {:?}): contains[{j}] is an empty string, which \
                     would match every event",
                    rule.category
                )));
            }
        }

        // Category names: built-in (table order), new config ones (first use), then `other`.
        let mut categories: Vec<String> = Vec::new();
        let builtin_names = rules::BUILTIN.iter().map(|r| r.category);
        let config_names = extra.iter().map(|r| r.category.as_str());
        for name in builtin_names.chain(config_names) {
            if name != OTHER && !categories.iter().any(|c| c == name) {
                categories.push(name.to_owned());
            }
        }
        categories.push(OTHER.to_owned());
        if categories.len() > usize::from(u16::MAX) {
            return Err(RuleError(format!(
                "classify rules: {} categories, at most {} are supported",
                categories.len(),
                u16::MAX
            )));
        }
        let category_of = |name: &str| {
            let i = categories.iter().position(|c| c == name);
            Category(i.unwrap_or(categories.len() - 1) as u16)
        };

        // Rules in priority order: config first, then built-in.
        let mut patterns: Vec<&str> = Vec::new();
        let mut pattern_rule: Vec<u32> = Vec::new();
        let mut rule_category: Vec<Category> = Vec::new();
        let all_rules = extra
            .iter()
            .map(|r| {
                let pats: Vec<&str> = r.contains.iter().map(String::as_str).collect();
                (r.category.as_str(), pats)
            })
            .chain(
                rules::BUILTIN
                    .iter()
                    .map(|r| (r.category, r.contains.to_vec())),
            );
        for (rule_index, (category, pats)) in all_rules.enumerate() {
            rule_category.push(category_of(category));
            for p in pats {
                patterns.push(p);
                pattern_rule.push(rule_index as u32);
            }
        }

        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|e| RuleError(format!("classify rules: cannot build the matcher: {e}")))?;

        Ok(Classifier {
            categories,
            matcher,
            pattern_rule,
            rule_category,
        })
    }

    /// Every category name, indexed by [`Category`] (`other` included).
    ///
    /// Built-in categories come first in table order (so their indices do not depend on the
    /// config), then categories that only config rules name, then `other`, always last.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// The name of a category (`other` for an index that is not one of this classifier's).
    pub fn name(&self, c: Category) -> &str {
        self.categories
            .get(usize::from(c.0))
            .map_or(OTHER, String::as_str)
    }

    /// The category called `name`, if there is one.
    pub fn category(&self, name: &str) -> Option<Category> {
        self.categories
            .iter()
            .position(|c| c == name)
            .map(|i| Category(i as u16))
    }

    /// The `other` category.
    pub fn other(&self) -> Category {
        Category(self.categories.len().saturating_sub(1) as u16)
    }

    /// The category of an event message: the first rule (in priority order) with a pattern
    /// anywhere in `msg`, else `other`.
    pub fn categorize(&self, msg: &[u8]) -> Category {
        let mut best: Option<u32> = None;
        if let Ok(iter) = self.matcher.try_find_overlapping_iter(msg) {
            for m in iter {
                let rule = self
                    .pattern_rule
                    .get(m.pattern().as_usize())
                    .copied()
                    .unwrap_or(u32::MAX);
                if best.map_or(true, |b| rule < b) {
                    best = Some(rule);
                    if rule == 0 {
                        break;
                    }
                }
            }
        }
        best.and_then(|r| self.rule_category.get(r as usize).copied())
            .unwrap_or_else(|| self.other())
    }

    /// The Kubernetes part of a record, from its parts: APP-NAME, the values of the
    /// [`SD_ID`] element (see [`SdValues::from_params`]) and MSG.
    ///
    /// `None` unless APP-NAME is `k8s.event`, `k8s.event/…` or `pod.log/…`. Fields the SD lacks
    /// are read from APP-NAME (see the module doc). Only events run the matcher.
    pub fn classify_parts<'a>(
        &self,
        app_name: Option<&'a str>,
        sd: SdValues<'a>,
        msg: &[u8],
    ) -> Option<K8sInfo<'a>> {
        let (kind, rest) = split_app_name(app_name?)?;
        let mut segments = rest.map(|r| r.splitn(3, '/'));
        let mut next = || segments.as_mut().and_then(Iterator::next);
        let (app_ns, app_obj, app_container) = (next(), next(), next());
        let category = match kind {
            K8sKind::Event => Some(self.categorize(msg)),
            K8sKind::PodLog => None,
        };
        Some(K8sInfo {
            kind,
            category,
            namespace: sd.namespace.or(app_ns.map(Cow::Borrowed)),
            object: sd.object.or(app_obj.map(Cow::Borrowed)),
            container: sd.container.or(app_container.map(Cow::Borrowed)),
            vm_id: sd.vm_id,
        })
    }

    /// The Kubernetes part of `msg`, or `None` for other senders.
    ///
    /// Reads the SD element [`SD_ID`] (only for Kubernetes APP-NAMEs) and calls
    /// [`Classifier::classify_parts`].
    pub fn classify<'a>(&self, msg: &Message<'a>) -> Option<K8sInfo<'a>> {
        K8sKind::from_app_name(msg.app_name?)?;
        let sd = msg
            .structured_data
            .as_ref()
            .and_then(|sd| sd.element(SD_ID))
            .map(|el| SdValues::from_params(el.params(), |v| v.unescaped()))
            .unwrap_or_default();
        self.classify_parts(msg.app_name, sd, msg.msg.unwrap_or_default())
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::builtin()
    }
}
