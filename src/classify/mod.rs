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
//! source it comes from). All patterns of all rules are in one Aho-Corasick automaton (with a
//! prefilter) that scans MSG, resuming one byte after the start of each match so that overlapping
//! matches are seen too. When several rules match, the one earliest in rule order wins, wherever
//! its match is in the text. Matching is case-sensitive (see `rules.rs` for why). No match →
//! `other`.
//!
//! Nothing here allocates on the happy path: names borrow from the frame; only an SD value with
//! escapes may be unescaped into a `String` by the caller.

mod rules;

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, Input, MatchKind};
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
        let mut b = SdValuesBuilder::default();
        for (name, v) in params {
            if !b.offer(name.as_ref(), || value(v)) {
                break;
            }
        }
        b.finish()
    }
}

/// [`SdValues`] built one param at a time, for a caller that walks the SD element anyway (the
/// record encoder writes every param and offers each one here in the same pass).
#[derive(Debug, Clone)]
pub struct SdValuesBuilder<'a> {
    values: SdValues<'a>,
    /// Rank of the name each field was taken from (0 = preferred); u8::MAX = not yet set.
    ranks: [u8; 4],
}

impl Default for SdValuesBuilder<'_> {
    fn default() -> Self {
        SdValuesBuilder {
            values: SdValues::default(),
            ranks: [u8::MAX; 4],
        }
    }
}

impl<'a> SdValuesBuilder<'a> {
    /// Offers the next param (in wire order); `value` is called only when the param is kept.
    /// Returns `false` once every field holds its preferred name (later params change nothing).
    #[inline]
    pub fn offer(&mut self, name: &str, value: impl FnOnce() -> Cow<'a, str>) -> bool {
        let (slot, rank) = match name {
            "namespace_name" => (0, 0),
            "namespace" => (0, 1),
            "object_name" => (1, 0),
            "object" => (1, 1),
            "pod" => (1, 2),
            "container_name" => (2, 0),
            "container" => (2, 1),
            "vm_id" => (3, 0),
            _ => return self.ranks != [0; 4],
        };
        if rank < self.ranks[slot] {
            self.ranks[slot] = rank;
            let text = Some(value());
            match slot {
                0 => self.values.namespace = text,
                1 => self.values.object = text,
                2 => self.values.container = text,
                _ => self.values.vm_id = text,
            }
        }
        self.ranks != [0; 4]
    }

    /// The values collected.
    pub fn finish(self) -> SdValues<'a> {
        self.values
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
            .match_kind(MatchKind::LeftmostFirst)
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
        // Patterns are numbered in rule order, and a leftmost-first search returns, at the
        // leftmost position where any pattern starts, the lowest-numbered pattern starting
        // there. Restarting one byte after each match start therefore visits every position
        // where some pattern starts, with the best pattern there, so the minimum over the visits
        // is the first rule with a pattern anywhere in MSG. A later match of a lower-priority
        // rule is skipped cheaply by the prefilter, and rule 0 ends the search at once.
        let mut best = u32::MAX;
        let mut at = 0;
        while at < msg.len() {
            let input = Input::new(msg).span(at..msg.len());
            let Ok(Some(m)) = self.matcher.try_find(input) else {
                break;
            };
            let rule = self
                .pattern_rule
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(u32::MAX);
            if rule < best {
                best = rule;
                if rule == 0 {
                    break;
                }
            }
            at = m.start() + 1;
        }
        self.rule_category
            .get(best as usize)
            .copied()
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
        let category = match kind {
            K8sKind::Event => Some(self.categorize(msg)),
            K8sKind::PodLog => None,
        };
        let (namespace, object, container) = match (sd.namespace, sd.object, sd.container) {
            // The usual PKS record: the SD has all three, APP-NAME is not read.
            (Some(ns), Some(obj), Some(c)) => (Some(ns), Some(obj), Some(c)),
            (ns, obj, c) => {
                let mut segments = rest.map(|r| r.splitn(3, '/'));
                let mut next = || segments.as_mut().and_then(Iterator::next);
                let (app_ns, app_obj, app_container) = (next(), next(), next());
                (
                    ns.or(app_ns.map(Cow::Borrowed)),
                    obj.or(app_obj.map(Cow::Borrowed)),
                    c.or(app_container.map(Cow::Borrowed)),
                )
            }
        };
        Some(K8sInfo {
            kind,
            category,
            namespace,
            object,
            container,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Classifier {
        Classifier::builtin()
    }

    /// Category name of an event message under the built-in rules.
    fn cat(msg: &str) -> String {
        let c = c();
        let info = c
            .classify_parts(
                Some("k8s.event/ns/obj/"),
                SdValues::default(),
                msg.as_bytes(),
            )
            .expect("k8s.event is an event");
        assert_eq!(info.kind, K8sKind::Event);
        c.name(info.category.expect("events have a category"))
            .to_owned()
    }

    fn sd<'a>(pairs: &[(&'a str, &'a str)]) -> SdValues<'a> {
        SdValues::from_params(pairs.iter().copied(), Cow::Borrowed)
    }

    fn rule(category: &str, contains: &[&str]) -> Rule {
        Rule {
            category: category.to_owned(),
            contains: contains.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn check(expected: &str, messages: &[&str]) {
        for m in messages {
            assert_eq!(cat(m), expected, "message {m:?}");
            let combined = format!("(combined from similar events): {m}");
            assert_eq!(cat(&combined), expected, "message {combined:?}");
            let with_lf = format!("{m} seq=00000001\n");
            assert_eq!(cat(&with_lf), expected, "message {with_lf:?}");
        }
    }

    #[test]
    fn err_image_pull() {
        check(
            "err_image_pull",
            &[
                "Error: ErrImagePull",
                "Error: ImagePullBackOff",
                "Failed to pull image \"nginx:1.25.3x\": rpc error: code = NotFound desc = failed \
                 to pull and unpack image \"docker.io/library/nginx:1.25.3x\": not found",
                "Failed to pull image \"bitnami/redis:7.2\": rpc error: code = Unknown desc = \
                 Error response from daemon: manifest for bitnami/redis:7.2 not found",
                "Back-off pulling image \"harbor.corp.local/apps/orders-api:2.4.1-rc9\"",
                "Error: ErrImageNeverPull",
                "Container image \"app:1\" is not present with pull policy of Never",
                "Error: InvalidImageName",
                "Failed to apply default image tag \"Foo//bar\": couldn't parse image reference",
                "Failed to inspect image \"nginx\": rpc error: code = Unavailable",
                "Error: ImageInspectError",
                "Error: RegistryUnavailable",
                "Error: SignatureValidationFailed",
                "Container image \"sha256:abc\" is present with pull policy of \"IfNotPresent\" \
                 but does not have the proper auth (image secret) that was used to pull the image",
            ],
        );
    }

    #[test]
    fn back_off() {
        check(
            "back_off",
            &[
                "Back-off restarting failed container",
                "Back-off restarting failed container nginx in pod web-1_default(0b7c2f4e-1d2a-4c1b-9a57-2f0c1b7d9e11)",
                "Back-off restarting failed docker container",
            ],
        );
    }

    #[test]
    fn started_created_pulled() {
        check(
            "started",
            &[
                "Started container",
                "Started container nginx",
                "Started container with docker id 4c9d1ab3e2f0",
            ],
        );
        check(
            "created",
            &[
                "Created container",
                "Created container nginx",
                "Created container: nginx",
                "Created container with docker id 4c9d1ab3e2f0; Security:[seccomp=unconfined]",
            ],
        );
        check(
            "pulled",
            &[
                "Successfully pulled image \"nginx:1.25.3\"",
                "Successfully pulled image \"nginx:1.25.3\" in 1.387s",
                "Successfully pulled image \"nginx:1.25.3\" in 1.387s (1.387s including waiting)",
                "Successfully pulled image \"nginx:1.25.3\" in 1.387s (2.1s including waiting). \
                 Image size: 71234567 bytes.",
                "Container image \"nginx:1.25.3\" already present on machine",
                "Container image \"nginx:1.25.3\" already present on machine and can be accessed \
                 by the pod",
            ],
        );
    }

    #[test]
    fn scheduling() {
        check(
            "scheduled",
            &[
                "Successfully assigned default/web-5d74489978-6thrr to vm-1234",
                "Successfully assigned web-5d74489978-6thrr to vm-1234",
            ],
        );
        check(
            "failed_scheduling",
            &[
                "0/3 nodes are available: 3 Insufficient cpu.",
                "0/5 nodes are available: 2 Insufficient memory, 3 node(s) had taints that the pod \
                 didn't tolerate.",
                "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) had untolerated taint \
                 {node-role.kubernetes.io/master: }. preemption: 0/4 nodes are available: 1 No \
                 preemption victims found for incoming pod, 3 Preemption is not helpful for \
                 scheduling..",
                "No nodes are available that match all of the predicates: Insufficient cpu (3).",
                "pod (web-1) failed to fit in any node\nfit failure summary on nodes : \
                 Insufficient cpu (3)",
                "no nodes available to schedule pods",
                "running PreBind plugin \"VolumeBinding\": binding volumes: timed out waiting for \
                 the condition",
                "running Reserve plugin \"VolumeBinding\": oops",
                "Binding rejected: Operation cannot be fulfilled",
                "binding rejected: running Bind plugin \"DefaultBinder\": pods \"x\" not found",
                "pod has unbound immediate PersistentVolumeClaims",
            ],
        );
    }

    #[test]
    fn killing_unhealthy() {
        check(
            "killing",
            &[
                "Killing container with id docker://nginx:Need to kill Pod",
                "Killing container with id docker://nginx:Container failed liveness probe.. \
                 Container will be killed and recreated.",
                "Killing container with docker id 4c9d1ab3e2f0: Need to kill pod.",
                "Stopping container nginx",
            ],
        );
        check(
            "unhealthy",
            &[
                "Liveness probe failed: HTTP probe failed with statuscode: 500",
                "Readiness probe failed: Get http://10.200.1.2:80/ready: net/http: request \
                 canceled (Client.Timeout exceeded while awaiting headers)",
                "Readiness probe failed: Get \"http://10.200.1.2:80/healthz\": dial tcp \
                 10.200.1.2:80: connect: connection refused",
                "Startup probe failed: dial tcp 10.200.1.2:8080: i/o timeout",
                "Liveness probe failed: /var/run/postgresql:5432 - rejecting connections\n",
                // Probe output that quotes another template: the probe failure wins.
                "Readiness probe failed: Started container check\nBack-off restarting failed \
                 container",
            ],
        );
    }

    #[test]
    fn node_problems() {
        check(
            "oom",
            &[
                "System OOM encountered",
                "System OOM encountered, victim process: java, pid: 123456",
            ],
        );
        check(
            "evicted",
            &[
                "The node was low on resource: memory. Container nginx was using 812344Ki, which \
                 exceeds its request of 256Mi. ",
                "The node was low on resource: [DiskPressure]. ",
                "The node had condition: [DiskPressure]. ",
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: \
                 51200Ki. Container x was using 900000Ki, request is 512Mi, has larger \
                 consumption of memory. ",
                "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. ",
                "Container app exceeded its local ephemeral storage limit \"1Gi\". ",
                "Usage of EmptyDir volume \"cache\" exceeds the limit \"512Mi\". ",
                "Marking for deletion Pod default/web-1",
                "Marking for deletion Pod web-1 from Node vm-1",
            ],
        );
        check(
            "node_not_ready",
            &[
                "Node vm-dc477ac1-0d6c-07b3-fe00-8f6360377333 status is now: NodeNotReady",
                "Node is not ready",
            ],
        );
    }

    #[test]
    fn other_events() {
        check(
            "other",
            &[
                "",
                "Pulling image \"nginx:1.25.3\"",
                "pulling image \"nginx:1.25.3\"",
                "Created pod: web-5d74489978-6thrr",
                "Deleted pod: web-5d74489978-6thrr",
                "Scaled up replica set web-5d74489978 to 3 from 1",
                "Starting kubelet.",
                "Node vm-1 status is now: NodeReady",
                "Node vm-1 status is now: NodeNotSchedulable",
                "Node vm-1 event: Registered Node vm-1 in Controller",
                "MountVolume.SetUp failed for volume \"web-config\" : configmap \"web-config\" not \
                 found",
                "Pod sandbox changed, it will be killed and re-created.",
                "Error: secret \"web-credentials\" not found",
                "Container nginx failed liveness probe, will be restarted",
                "Readiness probe errored: rpc error: code = NotFound desc = failed to exec in \
                 container: container is in CONTAINER_EXITED state",
                "Job completed",
            ],
        );
        // Case-sensitive: the templates' capitalisation is fixed in the Kubernetes sources.
        check(
            "other",
            &["started container nginx", "STOPPING CONTAINER X"],
        );
        // Not UTF-8: still classified, no panic.
        let c = c();
        assert_eq!(
            c.name(c.categorize(b"\xff\xfeStarted container \xc3")),
            "started"
        );
        assert_eq!(c.categorize(b"\xff\xfe\x00"), c.other());
    }

    #[test]
    fn sd_values_first_and_aliases() {
        let c = c();
        let info = c
            .classify_parts(
                Some("k8s.event/logging/elasticsearch-master-1/"),
                sd(&[
                    ("app", "x"),
                    ("namespace_name", "logging"),
                    ("object_name", "elasticsearch-master-1"),
                    ("container_name", ""),
                    ("vm_id", "vm-740d8a2f"),
                ]),
                b"Error: ErrImagePull seq=00000037\n",
            )
            .expect("event");
        assert_eq!(info.kind, K8sKind::Event);
        assert_eq!(c.name(info.category.expect("category")), "err_image_pull");
        assert_eq!(info.namespace.as_deref(), Some("logging"));
        assert_eq!(info.object.as_deref(), Some("elasticsearch-master-1"));
        assert_eq!(info.container.as_deref(), Some(""));
        assert_eq!(info.vm_id.as_deref(), Some("vm-740d8a2f"));
        assert!(matches!(info.namespace, Some(Cow::Borrowed(_))));

        // The benchmark corpus: plain `k8s.event`, `namespace`, `object_name` and `pod`.
        let info = c
            .classify_parts(
                Some("k8s.event"),
                sd(&[
                    ("namespace", "default"),
                    ("pod", "web-1"),
                    ("object_name", "web-1-obj"),
                    ("type", "Warning"),
                ]),
                b"Started container nginx",
            )
            .expect("event");
        assert_eq!(c.name(info.category.expect("category")), "started");
        assert_eq!(info.namespace.as_deref(), Some("default"));
        assert_eq!(info.object.as_deref(), Some("web-1-obj"));
        assert_eq!(info.container, None);
        assert_eq!(info.vm_id, None);

        // Aliases: preferred name wins whatever the order; a repeated name keeps its first value.
        let v = sd(&[
            ("pod", "p"),
            ("object", "o"),
            ("container", "c"),
            ("container_name", "cn"),
            ("namespace", "n1"),
            ("namespace", "n2"),
            ("vm_id", "vm-a"),
            ("vm_id", "vm-b"),
        ]);
        assert_eq!(v.object.as_deref(), Some("o"));
        assert_eq!(v.container.as_deref(), Some("cn"));
        assert_eq!(v.namespace.as_deref(), Some("n1"));
        assert_eq!(v.vm_id.as_deref(), Some("vm-a"));

        // Only kept values are converted (only those would be unescaped).
        let mut converted = Vec::new();
        let v = SdValues::from_params(
            [("app", "a"), ("namespace_name", "ns"), ("namespace", "x")],
            |s: &str| {
                converted.push(s.to_owned());
                Cow::Owned(s.to_owned())
            },
        );
        assert_eq!(v.namespace.as_deref(), Some("ns"));
        assert_eq!(converted, ["ns"]);
    }

    #[test]
    fn pod_logs_have_no_category() {
        let c = c();
        let info = c
            .classify_parts(
                Some("pod.log/default/web-5d74489978-6thrr/nginx"),
                sd(&[
                    ("app", "web"),
                    ("namespace_name", "default"),
                    ("object_name", "web-5d74489978-6thrr"),
                    ("container_name", "nginx"),
                    ("vm_id", "vm-1"),
                ]),
                b"Started container nginx; Back-off restarting failed container\n",
            )
            .expect("pod log");
        assert_eq!(info.kind, K8sKind::PodLog);
        assert_eq!(info.category, None);
        assert_eq!(info.namespace.as_deref(), Some("default"));
        assert_eq!(info.object.as_deref(), Some("web-5d74489978-6thrr"));
        assert_eq!(info.container.as_deref(), Some("nginx"));
        assert_eq!(info.vm_id.as_deref(), Some("vm-1"));
    }

    #[test]
    fn app_name_fallback() {
        let c = c();
        // SD absent: everything from APP-NAME, never vm_id.
        let info = c
            .classify_parts(
                Some("pod.log/default/web-5d74489978-6thrr/nginx"),
                SdValues::default(),
                b"x",
            )
            .expect("pod log");
        assert_eq!(info.namespace.as_deref(), Some("default"));
        assert_eq!(info.object.as_deref(), Some("web-5d74489978-6thrr"));
        assert_eq!(info.container.as_deref(), Some("nginx"));
        assert_eq!(info.vm_id, None);

        // A 48-byte cut APP-NAME: the object is cut short, the container is cut off.
        let cut = "pod.log/monitoring/cost-analyzer-prometheus-serv";
        assert_eq!(cut.len(), 48);
        let info = c
            .classify_parts(Some(cut), SdValues::default(), b"x")
            .expect("pod log");
        assert_eq!(info.namespace.as_deref(), Some("monitoring"));
        assert_eq!(
            info.object.as_deref(),
            Some("cost-analyzer-prometheus-serv")
        );
        assert_eq!(info.container, None);

        // Cut inside the namespace of an event.
        let cut = "k8s.event/customer-analytics-pipeline-staging/cl";
        assert_eq!(cut.len(), 48);
        let info = c
            .classify_parts(Some(cut), SdValues::default(), b"Started container")
            .expect("event");
        assert_eq!(
            info.namespace.as_deref(),
            Some("customer-analytics-pipeline-staging")
        );
        assert_eq!(info.object.as_deref(), Some("cl"));
        assert_eq!(info.container, None);

        // Uncut event APP-NAME: the container part is empty.
        let info = c
            .classify_parts(Some("k8s.event/default/web-1/"), SdValues::default(), b"")
            .expect("event");
        assert_eq!(info.container.as_deref(), Some(""));

        // Partial SD: the SD value wins field by field, APP-NAME fills the rest.
        let info = c
            .classify_parts(
                Some("pod.log/default/web-5d74489978-6thrr/nginx"),
                sd(&[
                    ("object_name", "web-5d74489978-6thrr-full"),
                    ("vm_id", "vm-9"),
                ]),
                b"x",
            )
            .expect("pod log");
        assert_eq!(info.namespace.as_deref(), Some("default"));
        assert_eq!(info.object.as_deref(), Some("web-5d74489978-6thrr-full"));
        assert_eq!(info.container.as_deref(), Some("nginx"));
        assert_eq!(info.vm_id.as_deref(), Some("vm-9"));

        // Plain `k8s.event` without SD: nothing to fall back on.
        let info = c
            .classify_parts(
                Some("k8s.event"),
                SdValues::default(),
                b"Stopping container x",
            )
            .expect("event");
        assert_eq!(c.name(info.category.expect("category")), "killing");
        assert_eq!(
            (info.namespace, info.object, info.container),
            (None, None, None)
        );
    }

    #[test]
    fn node_events_have_empty_namespace() {
        let c = c();
        let node = "vm-dc477ac1-0d6c-07b3-fe00-8f6360377333";
        let app = "k8s.event//vm-dc477ac1-0d6c-07b3-fe00-8f63603773";
        assert_eq!(app.len(), 48);
        let msg = format!("Node {node} status is now: NodeNotReady seq=00000313\n");
        // From the SD.
        let info = c
            .classify_parts(
                Some(app),
                sd(&[
                    ("namespace_name", ""),
                    ("object_name", node),
                    ("container_name", ""),
                    ("vm_id", node),
                ]),
                msg.as_bytes(),
            )
            .expect("event");
        assert_eq!(c.name(info.category.expect("category")), "node_not_ready");
        assert_eq!(info.namespace.as_deref(), Some(""));
        assert_eq!(info.object.as_deref(), Some(node));
        assert_eq!(info.vm_id.as_deref(), Some(node));
        // From APP-NAME: the empty segment is namespace "", the object is cut.
        let info = c
            .classify_parts(Some(app), SdValues::default(), msg.as_bytes())
            .expect("event");
        assert_eq!(info.namespace.as_deref(), Some(""));
        assert_eq!(info.object.as_deref(), Some(&node[..37]));
        assert_eq!(info.container, None);
        assert_eq!(info.vm_id, None);
    }

    #[test]
    fn not_kubernetes() {
        let c = c();
        for app in [
            None,
            Some(""),
            Some("sshd"),
            Some("kube-apiserver"),
            Some("k8s.events"),
            Some("k8s.eventx/a/b/"),
            Some("K8S.EVENT/a/b/"),
            Some("pod.log"),
            Some("pod.logs/a/b/c"),
            Some("xpod.log/a/b/c"),
        ] {
            let got = c.classify_parts(app, sd(&[("namespace_name", "ns")]), b"Started container");
            assert_eq!(got, None, "APP-NAME {app:?}");
        }
        assert_eq!(K8sKind::from_app_name("k8s.event"), Some(K8sKind::Event));
        assert_eq!(K8sKind::from_app_name("k8s.event/"), Some(K8sKind::Event));
        assert_eq!(K8sKind::from_app_name("pod.log/"), Some(K8sKind::PodLog));
        assert_eq!(K8sKind::from_app_name("k8s.event.x"), None);
    }

    #[test]
    fn categories_listing() {
        let b = c();
        let names: Vec<&str> = b.categories().iter().map(String::as_str).collect();
        for required in [
            "err_image_pull",
            "back_off",
            "started",
            "scheduled",
            "failed_scheduling",
            "created",
            "pulled",
            "killing",
            "unhealthy",
            "oom",
            "evicted",
            "node_not_ready",
        ] {
            assert!(
                names.contains(&required),
                "{required} missing from {names:?}"
            );
        }
        assert_eq!(names.len(), 13);
        assert_eq!(names.last(), Some(&"other"));
        assert_eq!(b.other(), Category(12));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(b.category(n), Some(Category(i as u16)));
            assert_eq!(b.name(Category(i as u16)), *n);
        }
        assert_eq!(b.name(Category(999)), "other");
        assert_eq!(b.category("nope"), None);

        // Config categories: new ones after the built-in ones, built-in indices unchanged,
        // `other` still last, no duplicates.
        let x = Classifier::with_rules(&[
            rule("failed_mount", &["MountVolume.SetUp failed"]),
            rule("back_off", &["CrashLoopBackOff"]),
            rule("failed_mount", &["Unable to attach or mount volumes"]),
            rule("other", &["Pulling image"]),
        ])
        .expect("valid rules");
        let xn: Vec<&str> = x.categories().iter().map(String::as_str).collect();
        assert_eq!(&xn[..12], &names[..12]);
        assert_eq!(&xn[12..], ["failed_mount", "other"]);
        assert_eq!(x.other(), Category(13));
    }

    #[test]
    fn config_rules_override_and_add() {
        let x = Classifier::with_rules(&[
            // Override: "will be restarted" kills are `killing` for this user.
            rule("killing", &["failed liveness probe, will be restarted"]),
            // New category that also takes a built-in `err_image_pull` text.
            rule("registry_auth", &["401 Unauthorized", "pull access denied"]),
            rule(
                "failed_mount",
                &["MountVolume.SetUp failed", "Unable to attach or mount"],
            ),
            // Force a built-in text to `other`.
            rule("other", &["Starting kubelet"]),
        ])
        .expect("valid rules");
        let cat = |m: &str| {
            x.name(
                x.classify_parts(Some("k8s.event/a/b/"), SdValues::default(), m.as_bytes())
                    .and_then(|i| i.category)
                    .expect("event"),
            )
            .to_owned()
        };
        assert_eq!(
            cat("Container nginx failed liveness probe, will be restarted"),
            "killing"
        );
        assert_eq!(
            cat(
                "Failed to pull image \"x\": rpc error: failed to fetch oauth token: unexpected \
                 status: 401 Unauthorized"
            ),
            "registry_auth"
        );
        assert_eq!(
            cat("Failed to pull image \"x\": not found"),
            "err_image_pull"
        );
        assert_eq!(
            cat("MountVolume.SetUp failed for volume \"c\" : configmap \"c\" not found"),
            "failed_mount"
        );
        assert_eq!(cat("Starting kubelet."), "other");
        assert_eq!(cat("Started container nginx"), "started");
        // The built-in classifier does not know these.
        assert_eq!(super::tests::cat("Starting kubelet."), "other");
        assert_eq!(
            super::tests::cat("Container nginx failed liveness probe, will be restarted"),
            "other"
        );
    }

    #[test]
    fn priority_is_rule_order_not_text_position() {
        // Two config rules: the first one wins even when the second matches earlier in the text.
        let x = Classifier::with_rules(&[
            rule("second_half", &["tail"]),
            rule("first_half", &["head"]),
        ])
        .expect("valid rules");
        assert_eq!(x.name(x.categorize(b"head ... tail")), "second_half");
        assert_eq!(x.name(x.categorize(b"head only")), "first_half");
        // Overlapping patterns: a shorter pattern inside a longer one of a later rule.
        let x = Classifier::with_rules(&[
            rule("short", &["Back-off"]),
            rule("long", &["Back-off restarting failed container"]),
        ])
        .expect("valid rules");
        assert_eq!(
            x.name(x.categorize(b"Back-off restarting failed container")),
            "short"
        );
        let x = Classifier::with_rules(&[
            rule("long", &["restarting failed container x"]),
            rule("short", &["failed"]),
        ])
        .expect("valid rules");
        assert_eq!(
            x.name(x.categorize(b"restarting failed container x")),
            "long"
        );
        // A higher-priority pattern that starts inside a lower-priority match.
        let x = Classifier::with_rules(&[rule("inner", &["bc"]), rule("outer", &["abcd"])])
            .expect("valid rules");
        assert_eq!(x.name(x.categorize(b"xabcdx")), "inner");
        assert_eq!(x.name(x.categorize(b"xabdx")), "other");
        // The same pattern in two rules: the first rule has it.
        let x = Classifier::with_rules(&[rule("one", &["z"]), rule("two", &["y", "z"])])
            .expect("valid rules");
        assert_eq!(x.name(x.categorize(b"z")), "one");
        assert_eq!(x.name(x.categorize(b"y z")), "one");
        assert_eq!(x.name(x.categorize(b"y")), "two");
        // Config before built-in, even when the built-in pattern comes first in the text.
        let x = Classifier::with_rules(&[rule("mine", &["nginx"])]).expect("valid rules");
        assert_eq!(x.name(x.categorize(b"Started container nginx")), "mine");
        // Built-in table order: unhealthy before started when probe output quotes a template.
        let b = c();
        assert_eq!(
            b.name(b.categorize(b"Started container x; Liveness probe failed: boom")),
            "unhealthy"
        );
    }

    #[test]
    fn rule_validation() {
        let err = |rules: &[Rule]| Classifier::with_rules(rules).expect_err("invalid").0;
        let ok = rule("ok", &["x"]);

        let e = err(&[ok.clone(), rule("Bad", &["x"])]);
        assert!(
            e.contains("rules[1]") && e.contains("\"Bad\"") && e.contains("[a-z][a-z0-9_]*"),
            "{e}"
        );
        for bad in ["", "1abc", "_x", "a-b", "a b", "é", "abC"] {
            let e = err(&[rule(bad, &["x"])]);
            assert!(
                e.contains("rules[0]") && e.contains("must match"),
                "{bad:?}: {e}"
            );
        }
        let e = err(&[ok.clone(), ok.clone(), rule("empty", &[])]);
        assert!(
            e.contains("rules[2]") && e.contains("\"empty\"") && e.contains("`contains` is empty"),
            "{e}"
        );
        let e = err(&[rule("blank", &["a", ""])]);
        assert!(
            e.contains("rules[0]") && e.contains("contains[1]") && e.contains("empty string"),
            "{e}"
        );
        assert_eq!(format!("{}", RuleError(e.clone())), e);

        for good in ["a", "a1", "a_b_2", "failed_mount", "other", "back_off"] {
            assert!(
                Classifier::with_rules(&[rule(good, &["x"])]).is_ok(),
                "{good}"
            );
        }
    }

    /// The first rule (in order) with a pattern that occurs in `msg`, the slow obvious way.
    fn naive(rules: &[Rule], msg: &[u8]) -> Option<usize> {
        rules.iter().position(|r| {
            r.contains
                .iter()
                .any(|p| msg.windows(p.len()).any(|w| w == p.as_bytes()))
        })
    }

    proptest::proptest! {
        /// One pass with restarts gives the same answer as trying every rule in order, also
        /// with overlapping and nested patterns (small alphabet, so there are many of them).
        #[test]
        fn categorize_matches_naive(
            rules in proptest::collection::vec(
                proptest::collection::vec("[abc]{1,4}", 1..4), 1..6),
            msg in "[abcx]{0,40}",
        ) {
            let rules: Vec<Rule> = rules
                .into_iter()
                .enumerate()
                .map(|(i, contains)| Rule { category: format!("r{i}"), contains })
                .collect();
            let x = Classifier::with_rules(&rules).expect("valid rules");
            let got = x.name(x.categorize(msg.as_bytes())).to_owned();
            let want = naive(&rules, msg.as_bytes()).map_or("other".to_owned(), |i| format!("r{i}"));
            proptest::prop_assert_eq!(got, want);
        }

        /// Arbitrary APP-NAME and MSG bytes: never a panic; only Kubernetes APP-NAMEs classify.
        #[test]
        fn no_panic_on_any_input(app in ".{0,60}", msg in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let c = Classifier::builtin();
            let got = c.classify_parts(Some(&app), SdValues::default(), &msg);
            proptest::prop_assert_eq!(got.is_some(), K8sKind::from_app_name(&app).is_some());
        }
    }

    #[test]
    fn builtin_table_is_valid() {
        // Same validation as config rules, and every pattern selects its own category.
        let b = c();
        for r in rules::BUILTIN {
            let as_rule = rule(r.category, r.contains);
            assert!(Classifier::with_rules(&[as_rule]).is_ok(), "{}", r.category);
            for p in r.contains {
                assert_eq!(
                    b.name(b.categorize(p.as_bytes())),
                    r.category,
                    "pattern {p:?}"
                );
            }
        }
    }
}
