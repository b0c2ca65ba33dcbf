//! The cluster's own failures (image pull back-off, a node refusing the pod, a
//! command that keeps exiting, a bad container config) in one line a student can
//! read, from the pod's status alone: the reflector already holds it, so no Events
//! are listed.
//!
//! With `nodeName` set the scheduler is bypassed, so a node that cannot take a pod
//! (`OutOfcpu`, `OutOfmemory`, `OutOfnvidia.com/gpu`, `NodeAffinity`) fails it at
//! admission: phase `Failed` with that reason. A node whose kubelet stopped
//! answering leaves its pods `Unknown`. A quota exceeded is the API server's refusal
//! of the create (`api.rs`).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::objects::{CONTAINER, INSTALL_CONTAINER};

/// Where a starting pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Running, with the student's container running.
    Ready,
    /// Not yet: what it is waiting for, in a student's words (empty: nothing to say).
    Waiting(String),
    /// It will not run without someone changing something: why.
    Failed(String),
}

/// Waiting reasons the kubelet does not get over by itself.
const FATAL_WAITING: [&str; 7] = [
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Where `pod` is on its way to running.
pub fn progress(pod: &Pod) -> Progress {
    if pod.metadata.deletion_timestamp.is_some() {
        return Progress::Failed("the pod is being deleted".to_owned());
    }
    let Some(status) = &pod.status else {
        return Progress::Waiting(String::new());
    };
    match status.phase.as_deref() {
        Some("Failed") => {
            let reason = status.reason.as_deref().unwrap_or("Failed");
            let message = status.message.as_deref().unwrap_or("");
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("?");
            return Progress::Failed(if let Some(resource) = reason.strip_prefix("OutOf") {
                format!("node {node} has not enough {resource} free for your environment now; try again later or ask your operator ({message})")
            } else {
                format!("node {node} refused the pod ({reason}): {message}")
            });
        }
        Some("Succeeded") => {
            return Progress::Failed("the pod's command exited".to_owned());
        }
        Some("Unknown") => {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("?");
            return Progress::Failed(format!(
                "node {node} is not ready (its kubelet does not answer); try again later or ask your operator"
            ));
        }
        _ => {}
    }
    for init in status.init_container_statuses.iter().flatten() {
        if init.name == INSTALL_CONTAINER {
            if let Some(why) = fatal(init) {
                return Progress::Failed(format!("labssh's init image: {why}"));
            }
        }
    }
    let student = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    if let Some(student) = student {
        if let Some(why) = fatal(student) {
            return Progress::Failed(why);
        }
        if status.phase.as_deref() == Some("Running")
            && student.state.as_ref().is_some_and(|s| s.running.is_some())
        {
            return Progress::Ready;
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    // Pinned by nodeName, a pod the scheduler still holds (a scheduling gate, a
    // node that will not take it) does not get over it by itself.
    if let Some(c) = unschedulable {
        return Progress::Failed(format!(
            "the cluster cannot place your pod now ({}); try again later or ask your operator",
            c.message.as_deref().unwrap_or("unschedulable")
        ));
    }
    let waiting = student
        .and_then(|c| c.state.as_ref()?.waiting.as_ref())
        .and_then(|w| w.reason.as_deref());
    Progress::Waiting(match waiting {
        Some("ContainerCreating") => "pulling the image and starting".to_owned(),
        Some("ErrImagePull") => "pulling the image failed once; retrying".to_owned(),
        Some("PodInitializing") => "installing labssh in the pod".to_owned(),
        _ => String::new(),
    })
}

/// Why `container` will not start, if it will not.
fn fatal(container: &ContainerStatus) -> Option<String> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !FATAL_WAITING.contains(&reason) {
        return None;
    }
    let message = waiting.message.as_deref().unwrap_or("");
    Some(match reason {
        "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => format!(
            "the image '{}' cannot be pulled ({reason}): {message}",
            container.image
        ),
        "CrashLoopBackOff" => {
            let last = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| match t.message.as_deref() {
                    Some(m) if !m.is_empty() => format!("exit code {}: {m}", t.exit_code),
                    _ => format!("exit code {}", t.exit_code),
                })
                .unwrap_or_default();
            format!("the container's command keeps exiting ({last})")
        }
        _ => format!("the container cannot start ({reason}): {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodSpec, PodStatus,
    };

    fn pod(phase: &str, student: Option<ContainerState>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some("node-1".to_owned()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                container_statuses: student.map(|state| {
                    vec![ContainerStatus {
                        name: CONTAINER.to_owned(),
                        image: "labssh/python:3".to_owned(),
                        state: Some(state),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str, message: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_is_ready() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        assert_eq!(progress(&pod("Running", Some(running))), Progress::Ready);
        assert!(matches!(
            progress(&pod("Pending", Some(waiting("ContainerCreating", "")))),
            Progress::Waiting(w) if w.contains("pulling")
        ));
        assert!(matches!(
            progress(&pod("Pending", None)),
            Progress::Waiting(_)
        ));
    }

    #[test]
    fn pull_failures_name_the_image() {
        let p = pod(
            "Pending",
            Some(waiting("ImagePullBackOff", "Back-off pulling image")),
        );
        let Progress::Failed(why) = progress(&p) else {
            panic!("not failed")
        };
        assert!(
            why.contains("labssh/python:3") && why.contains("Back-off"),
            "{why}"
        );
        // One failed pull is retried by the kubelet.
        assert!(matches!(
            progress(&pod("Pending", Some(waiting("ErrImagePull", "timeout")))),
            Progress::Waiting(_)
        ));
    }

    #[test]
    fn a_full_node_says_what_is_short() {
        let mut p = pod("Failed", None);
        let status = p.status.as_mut().unwrap();
        status.reason = Some("OutOfnvidia.com/gpu".to_owned());
        status.message = Some("Node didn't have enough resource: nvidia.com/gpu".to_owned());
        let Progress::Failed(why) = progress(&p) else {
            panic!("not failed")
        };
        assert!(
            why.contains("node-1") && why.contains("nvidia.com/gpu free"),
            "{why}"
        );
    }

    #[test]
    fn crash_loops_give_the_exit_code() {
        let mut p = pod("Running", Some(waiting("CrashLoopBackOff", "back-off")));
        let student = &mut p
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0];
        student.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 127,
                message: Some("exec: sleep: not found".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let Progress::Failed(why) = progress(&p) else {
            panic!("not failed")
        };
        assert!(why.contains("127") && why.contains("not found"), "{why}");
    }

    #[test]
    fn a_node_not_ready_is_said() {
        let Progress::Failed(why) = progress(&pod("Unknown", None)) else {
            panic!("not failed")
        };
        assert!(why.contains("node-1 is not ready"), "{why}");
    }

    #[test]
    fn unschedulable_fails_with_the_reason() {
        let mut p = pod("Pending", None);
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".to_owned(),
            status: "False".to_owned(),
            reason: Some("Unschedulable".to_owned()),
            message: Some("0/3 nodes are available".to_owned()),
            ..Default::default()
        }]);
        assert!(matches!(progress(&p), Progress::Failed(w) if w.contains("0/3 nodes")));
    }

    #[test]
    fn a_deleted_pod_is_not_waited_for() {
        let mut p = pod("Running", None);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(matches!(progress(&p), Progress::Failed(_)));
    }
}
