//! `backend = "kubernetes"` and its `[kubernetes]` section.

use serde::Deserialize;

use super::Config;

/// The namespace students' pods go in when none is configured.
const DEFAULT_NAMESPACE: &str = "labssh-students";
/// A home big enough for a semester's coursework.
const DEFAULT_HOME_SIZE: &str = "5Gi";
/// Pulling a large image onto a fresh node takes a while; past this the student is told.
const DEFAULT_POD_READY_TIMEOUT_SECS: u64 = 300;

/// Where kubelets look for `Localhost` seccomp profiles.
const DEFAULT_SECCOMP_DIR: &str = "/var/lib/kubelet/seccomp";

/// Which container runtime the agent drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The local Docker engine (bollard).
    #[default]
    Docker,
    /// Pods on this agent's node, through the Kubernetes API (kube-rs).
    Kubernetes,
}

/// How the agent uses Kubernetes; read only with `backend = "kubernetes"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Namespace of the students' pods, homes and network policies.
    pub namespace: String,
    /// The node pods are pinned to (`nodeName`); empty: `$NODE_NAME` (the downward API
    /// in the DaemonSet), else the agent's `name`.
    pub node_name: String,
    /// StorageClass of the students' home claims; empty: the cluster's default.
    pub storage_class: String,
    /// Size each home claim asks for (a Kubernetes quantity, e.g. `5Gi`).
    pub home_size: String,
    /// Image holding `/labssh-init` and `/labssh-sftp` (the agent's own image), which
    /// an init container copies into each pod; empty: the agent's image is unknown and
    /// pods are made for `pods/exec` only.
    pub init_image: String,
    /// Pull policy of student images: `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// Seconds a new pod may take to run (pull, schedule, start) before the student is
    /// told and the pod is removed.
    pub pod_ready_timeout_secs: u64,
    /// Pod Security level the students' namespace enforces: `baseline` (labssh-init runs
    /// as root and drops to the student, as with Docker) or `restricted` (the whole pod
    /// runs as the student's uid; root environments are refused).
    pub pod_security: String,
    /// Networks students' pods may never reach (the cluster's pod and service CIDRs),
    /// on top of link-local; written into each pod's NetworkPolicy.
    pub cluster_cidrs: Vec<String>,
    /// `runtimeClassName` for pods (e.g. `nvidia` or `gvisor`); empty: the default.
    pub runtime_class: String,
    /// The kubelet's seccomp directory as the agent sees it (a hostPath mount of
    /// `/var/lib/kubelet/seccomp`): an environment's own seccomp profile is written
    /// under it, at `labssh/{hash}.json`, before its first pod is made.
    pub seccomp_dir: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            node_name: String::new(),
            storage_class: String::new(),
            home_size: DEFAULT_HOME_SIZE.to_owned(),
            init_image: String::new(),
            image_pull_policy: "IfNotPresent".to_owned(),
            pod_ready_timeout_secs: DEFAULT_POD_READY_TIMEOUT_SECS,
            pod_security: "baseline".to_owned(),
            cluster_cidrs: Vec::new(),
            runtime_class: String::new(),
            seccomp_dir: DEFAULT_SECCOMP_DIR.to_owned(),
        }
    }
}

impl KubernetesConfig {
    /// The node to pin pods to: the configured one, `$NODE_NAME`, or `agent`.
    pub fn node(&self, agent: &str) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::env::var("NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| agent.to_owned())
    }

    /// Whether the namespace enforces the `restricted` Pod Security level.
    pub fn restricted(&self) -> bool {
        self.pod_security == "restricted"
    }
}

/// A DNS-1123 label: what namespaces, nodes and classes are named.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what nodes and storage classes may be named.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes quantity such as `5Gi`, `500M` or `10737418240`.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|v| v > 0.0)
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
}

impl Config {
    /// `[kubernetes]` when it is used: names, sizes and levels Kubernetes accepts.
    pub(super) fn check_kubernetes(&self, problems: &mut Vec<String>) {
        if self.backend != BackendKind::Kubernetes {
            return;
        }
        let k = &self.kubernetes;
        if !is_dns_label(&k.namespace) {
            problems.push(format!(
                "kubernetes.namespace: {:?} is not a namespace name ([a-z0-9-], at most 63)",
                k.namespace
            ));
        }
        for (key, value) in [
            ("kubernetes.node_name", &k.node_name),
            ("kubernetes.storage_class", &k.storage_class),
            ("kubernetes.runtime_class", &k.runtime_class),
        ] {
            if !value.is_empty() && !is_dns_subdomain(value) {
                problems.push(format!("{key}: {value:?} is not a Kubernetes object name"));
            }
        }
        if !is_quantity(&k.home_size) {
            problems.push(format!(
                "kubernetes.home_size: {:?} is not a size like 5Gi",
                k.home_size
            ));
        }
        if !["IfNotPresent", "Always", "Never"].contains(&k.image_pull_policy.as_str()) {
            problems.push(format!(
                "kubernetes.image_pull_policy: {:?} must be IfNotPresent, Always or Never",
                k.image_pull_policy
            ));
        }
        if k.pod_ready_timeout_secs == 0 {
            problems.push("kubernetes.pod_ready_timeout_secs: must be greater than 0".to_owned());
        }
        if !["baseline", "restricted"].contains(&k.pod_security.as_str()) {
            problems.push(format!(
                "kubernetes.pod_security: {:?} must be baseline or restricted",
                k.pod_security
            ));
        }
        if !k.seccomp_dir.starts_with('/') {
            problems.push(format!(
                "kubernetes.seccomp_dir: {:?} must be an absolute path",
                k.seccomp_dir
            ));
        }
        for cidr in &k.cluster_cidrs {
            if let Err(e) = labssh_proto::net::parse_net(cidr) {
                problems.push(format!("kubernetes.cluster_cidrs: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::BackendKind;

    #[test]
    fn docker_is_the_default_and_kubernetes_keys_parse() {
        assert_eq!(Config::default().backend, BackendKind::Docker);
        let c = Config::from_toml_str(
            r#"
            backend = "kubernetes"
            [kubernetes]
            namespace = "lab-students"
            storage_class = "fast-ssd"
            home_size = "10Gi"
            pod_security = "restricted"
            cluster_cidrs = ["10.244.0.0/16", "10.96.0.0/12"]
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Kubernetes);
        assert_eq!(c.kubernetes.namespace, "lab-students");
        assert!(c.kubernetes.restricted());
        assert_eq!(
            c.kubernetes.node("agent-7"),
            std::env::var("NODE_NAME").unwrap_or("agent-7".into())
        );
    }

    #[test]
    fn bad_kubernetes_keys_are_named() {
        let e = Config::from_toml_str(
            r#"
            backend = "kubernetes"
            [kubernetes]
            namespace = "Lab_Students"
            home_size = "lots"
            image_pull_policy = "Sometimes"
            pod_security = "privileged"
            cluster_cidrs = ["10.0.0.0/33"]
            seccomp_dir = "seccomp"
            "#,
        )
        .unwrap_err()
        .to_string();
        for key in [
            "kubernetes.namespace",
            "kubernetes.home_size",
            "kubernetes.image_pull_policy",
            "kubernetes.pod_security",
            "kubernetes.cluster_cidrs",
            "kubernetes.seccomp_dir",
        ] {
            assert!(e.contains(key), "{key} not named in: {e}");
        }
        let e = Config::from_toml_str("backend = \"podman\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("podman"), "{e}");
    }
}
