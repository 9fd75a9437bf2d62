//! The built-in rule table: event categories and the message fragments that stand for them.
//!
//! Every fragment is taken from a message template in the Kubernetes sources (paths are in
//! `kubernetes/kubernetes`; "old" = the docker-era kubelet of Kubernetes 1.5–1.13, as seen in
//! PKS 1.2/1.3 clusters). Matching is case-sensitive: the templates are fixed Go format strings,
//! the few capitalisation changes between versions are listed as separate fragments, and the
//! variable parts (pod, container, node names) are lowercase DNS labels that a capitalised
//! fragment can never match by accident.
//!
//! Order matters only when one message contains fragments of two categories: the first row
//! wins. `unhealthy` and `err_image_pull` come first because their templates end in free text
//! (probe output, the runtime's pull error) that could quote another template.
//!
//! Left out on purpose (they stay `other`): `Pulling image` / `pulling image` (a pull started,
//! nothing happened yet); `Container <c> failed liveness probe, will be restarted`, `Container
//! <c> definition changed` (kubelet's `Killing` reason with a custom message; the sample corpus
//! expects `other`); `<probe> probe errored: …` (the probe could not run, the sample expects
//! `other`); `Attempting to reclaim <resource>` (node-level `EvictionThresholdMet`, no pod
//! evicted yet); `Preempted by …` (scheduler preemption); volume (`FailedMount`) and sandbox
//! (`FailedCreatePodSandBox`, `SandboxChanged`) failures, which the sample corpus expects as
//! `other`.

/// One row of the built-in table: a category and the fragments that select it.
pub(crate) struct BuiltinRule {
    /// Category name.
    pub category: &'static str,
    /// Substrings of MSG; any one selects the category.
    pub contains: &'static [&'static str],
}

/// The built-in table, in priority order.
pub(crate) const BUILTIN: &[BuiltinRule] = &[
    BuiltinRule {
        category: "unhealthy",
        contains: &[
            // pkg/kubelet/prober/prober.go: "%s probe failed: %s" (Liveness / Readiness /
            // Startup), every version.
            "probe failed",
        ],
    },
    BuiltinRule {
        category: "err_image_pull",
        contains: &[
            // pkg/kubelet/images/types.go ErrImagePull, shown as "Error: ErrImagePull" by
            // pkg/kubelet/kuberuntime/kuberuntime_container.go startContainer ("Error: %v").
            "ErrImagePull",
            // pkg/kubelet/images/types.go ErrImagePullBackOff ("Error: ImagePullBackOff").
            "ImagePullBackOff",
            // pkg/kubelet/images/image_manager.go: "Failed to pull image %q: %v" (all versions).
            "Failed to pull image",
            // pkg/kubelet/images/image_manager.go: "Back-off pulling image %q".
            "Back-off pulling image",
            // pkg/kubelet/images/types.go ErrImageNeverPull ("Error: ErrImageNeverPull").
            "ErrImageNeverPull",
            // pkg/kubelet/images/image_manager.go: "Container image %q is not present with pull
            // policy of Never" (reason ErrImageNeverPull).
            "is not present with pull policy of Never",
            // pkg/kubelet/images/types.go ErrInvalidImageName ("Error: InvalidImageName").
            "InvalidImageName",
            // pkg/kubelet/images/image_manager.go: "Failed to apply default image tag %q: %v".
            "Failed to apply default image tag",
            // pkg/kubelet/images/types.go ErrImageInspect ("Error: ImageInspectError").
            "ImageInspectError",
            // pkg/kubelet/images/image_manager.go: "Failed to inspect image %q: %v".
            "Failed to inspect image",
            // staging/src/k8s.io/cri-api/pkg/errors/errors.go ErrRegistryUnavailable,
            // ErrSignatureValidationFailed (pull errors, "Error: %v").
            "Error: RegistryUnavailable",
            "Error: SignatureValidationFailed",
            // pkg/kubelet/images/image_manager.go (1.33+, KubeletEnsureSecretPulledImages):
            // "Container image %q is present with pull policy of %q but does not have the proper
            // auth (image secret) that was used to pull the image".
            "does not have the proper auth",
        ],
    },
    BuiltinRule {
        category: "back_off",
        contains: &[
            // pkg/kubelet/kuberuntime/kuberuntime_manager.go doBackOff: "Back-off restarting
            // failed container" (≤1.25) and "Back-off restarting failed container %s in pod %s"
            // (1.26+); old pkg/kubelet/dockertools/docker_manager.go: "Back-off restarting failed
            // docker container".
            "Back-off restarting failed",
        ],
    },
    BuiltinRule {
        category: "started",
        contains: &[
            // pkg/kubelet/kuberuntime/kuberuntime_container.go: "Started container" (1.10–1.13),
            // "Started container %s" (1.14+); old dockertools: "Started container with docker id".
            "Started container",
        ],
    },
    BuiltinRule {
        category: "scheduled",
        contains: &[
            // pkg/scheduler/schedule_one.go (older pkg/scheduler/scheduler.go): "Successfully
            // assigned %v/%v to %v"; before 1.11: "Successfully assigned %v to %v".
            "Successfully assigned",
        ],
    },
    BuiltinRule {
        category: "failed_scheduling",
        contains: &[
            // pkg/scheduler/framework/types.go FitError (older core/generic_scheduler.go):
            // "0/%v nodes are available: %v." (1.11+), "No nodes are available that match all of
            // the predicates: …" (1.9–1.10); also the "preemption: 0/%v nodes are available" tail.
            "nodes are available",
            // plugin/pkg/scheduler/generic_scheduler.go FitError (1.5–1.8): "pod (%s) failed to
            // fit in any node".
            "failed to fit in any node",
            // pkg/scheduler/schedule_one.go ErrNoNodesAvailable.
            "no nodes available to schedule pods",
            // pkg/scheduler/scheduler.go (≤1.18): "Binding rejected: %v";
            // pkg/scheduler/schedule_one.go (1.19+): "binding rejected: %w".
            "Binding rejected",
            "binding rejected",
            // pkg/scheduler/framework/runtime/framework.go: volume binding and other plugin
            // failures reported as FailedScheduling.
            "running PreBind plugin",
            "running Reserve plugin",
            // pkg/scheduler/framework/plugins/volumebinding (older algorithm/predicates):
            // "pod has unbound immediate PersistentVolumeClaims" / "pod has unbound
            // PersistentVolumeClaims".
            "pod has unbound",
        ],
    },
    BuiltinRule {
        category: "created",
        contains: &[
            // pkg/kubelet/kuberuntime/kuberuntime_container.go: "Created container" (1.10–1.13),
            // "Created container %s" (1.14–1.31), "Created container: %s" (1.32+); old
            // dockertools: "Created container with docker id". Not "Created pod: …" (ReplicaSet).
            "Created container",
        ],
    },
    BuiltinRule {
        category: "pulled",
        contains: &[
            // pkg/kubelet/images/image_manager.go: "Successfully pulled image %q" (≤1.19),
            // "… in %v" (1.20+), "… in %v (%v including waiting)" (1.28+), ". Image size: %v
            // bytes." (1.29+).
            "Successfully pulled image",
            // pkg/kubelet/images/image_manager.go: "Container image %q already present on machine"
            // (1.33+ may add "and can be accessed by the pod").
            "already present on machine",
        ],
    },
    BuiltinRule {
        category: "killing",
        contains: &[
            // pkg/kubelet/kuberuntime/kuberuntime_container.go killContainer (≤1.13): "Killing
            // container with id %s:%s"; old dockertools: "Killing container with docker id %v".
            "Killing container",
            // pkg/kubelet/kuberuntime/kuberuntime_container.go killContainer (1.14+): "Stopping
            // container %s".
            "Stopping container",
        ],
    },
    BuiltinRule {
        category: "oom",
        contains: &[
            // pkg/kubelet/oom/oom_watcher_linux.go (older pkg/kubelet/oom_watcher.go): "System
            // OOM encountered" and (1.19+) ", victim process: %s, pid: %d".
            "System OOM encountered",
        ],
    },
    BuiltinRule {
        category: "evicted",
        contains: &[
            // pkg/kubelet/eviction/helpers.go nodeLowMessageFmt: "The node was low on resource:
            // %v. ".
            "The node was low on resource",
            // pkg/kubelet/eviction/helpers.go nodeConditionMessageFmt: "The node had condition:
            // %v. ".
            "The node had condition",
            // pkg/kubelet/eviction/helpers.go podEphemeralStorageMessageFmt: "Pod ephemeral local
            // storage usage exceeds the total limit of containers %s. ".
            "Pod ephemeral local storage usage exceeds",
            // pkg/kubelet/eviction/helpers.go containerEphemeralStorageMessageFmt: "Container %s
            // exceeded its local ephemeral storage limit %q. ".
            "exceeded its local ephemeral storage limit",
            // pkg/kubelet/eviction/helpers.go emptyDirMessageFmt: "Usage of EmptyDir volume %q
            // exceeds the limit %q. ".
            "Usage of EmptyDir volume",
            // pkg/controller/tainteviction/taint_eviction.go (older nodelifecycle/scheduler/
            // taint_manager.go) TaintManagerEviction: "Marking for deletion Pod %s";
            // pkg/controller/util/node/controller_utils.go DeletePods NodeControllerEviction:
            // "Marking for deletion Pod %s from Node %s".
            "Marking for deletion Pod",
        ],
    },
    BuiltinRule {
        category: "node_not_ready",
        contains: &[
            // pkg/controller/util/node/controller_utils.go RecordNodeStatusChange (node lifecycle
            // controller) and pkg/kubelet/nodestatus/setters.go (kubelet): "Node %s status is now:
            // %s" with NodeNotReady.
            "status is now: NodeNotReady",
            // pkg/controller/util/node/controller_utils.go MarkPodsNotReady: event on each pod of
            // the node, reason NodeNotReady, "Node is not ready".
            "Node is not ready",
        ],
    },
];
