//! [`KubeBackend`]: making sure of a student's pod and home, stopping it, and the one
//! list+watch (a reflector) over this agent's pods that everything else reads.
//!
//! Lifecycle on pods: a missing pod is created (its home claim and NetworkPolicy
//! first) and waited for until it runs or the cluster says why it will not (then it
//! is deleted and the student told); stop deletes the pod, its home claim kept; start
//! is creating it again; a roll-out or `max_age` recreates it. A pod cannot be frozen,
//! so pause says so. What a pod looks like is `objects`; the cluster's failures in a
//! student's words are `events`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use labssh_proto::pb;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{self, Progress};
use super::exec::{KubeExec, PodExec};
use super::inside::{Inside, PodRef};
use super::objects::{self, PodPlan, CONTAINER};
use crate::backend::docker::LABEL_SPAWN;
use crate::backend::helper::Pipes;
use crate::backend::lifecycle_ops::read_keepalive;
use crate::backend::{
    settings_hash, Backend, BackendError, ContainerInfo, ContainerState, Duplex, EnsureOptions,
    EnsureStep, Ensured, KeepaliveFile, KeyedLock, Process, Renewal, RunAs, SocketListener,
    SpawnSpec,
};
use crate::config::{Config, KubernetesConfig};

/// The field manager labssh's server-side applies are made as.
const FIELD_MANAGER: &str = "labssh-agent";
/// How long an ensure waits for the first list of this agent's pods.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deleted pod may take to go (its grace period is 5 s).
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pod the API server says exists may take to show in the watch.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);
/// Names of an allow-list are resolved for at most this long each.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pods on this agent's node.
pub struct KubeBackend {
    /// The students' namespace's pods.
    pods: Api<Pod>,
    /// Their home claims.
    claims: Api<PersistentVolumeClaim>,
    /// Their NetworkPolicies.
    policies: Api<NetworkPolicy>,
    /// This agent's pods as the watch last saw them.
    store: Store<Pod>,
    /// Bumped at every watch event.
    changes: watch::Sender<u64>,
    /// This agent's name.
    agent: String,
    /// Object name prefix.
    prefix: String,
    /// The node pods are pinned to.
    node: String,
    /// The container command when the environment gives none.
    keepalive_cmd: Vec<String>,
    /// `[kubernetes]`.
    config: KubernetesConfig,
    /// Serializes ensures per pod.
    locks: KeyedLock,
    /// Work inside pods.
    inside: Inside,
    /// The reflector's task, ended with the backend.
    reflector: tokio::task::JoinHandle<()>,
}

impl Drop for KubeBackend {
    fn drop(&mut self) {
        self.reflector.abort();
    }
}

impl KubeBackend {
    /// Connects with the in-cluster service account (or `$KUBECONFIG`) and starts the
    /// pod reflector.
    pub async fn connect(config: &Config) -> Result<KubeBackend, BackendError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| BackendError::Runtime {
                action: "connecting to Kubernetes",
                message: e.to_string(),
            })?;
        let exec = Arc::new(KubeExec {
            client: client.clone(),
        });
        Ok(KubeBackend::with_client(client, config, exec))
    }

    /// The backend over `client` (a mocked API server in tests), with `exec` for
    /// processes in pods made without a helper. Starts the reflector.
    pub fn with_client(
        client: kube::Client,
        config: &Config,
        exec: Arc<dyn PodExec>,
    ) -> KubeBackend {
        let kube = config.kubernetes.clone();
        let namespace = kube.namespace.as_str();
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let (store, writer) = reflector::store();
        let (changes, _) = watch::channel(0u64);
        let selector = objects::selector(&config.name, &config.container_prefix);
        let stream =
            watcher(pods.clone(), watcher::Config::default().labels(&selector)).default_backoff();
        let tell = changes.clone();
        let reflector = tokio::spawn(async move {
            let mut stream = std::pin::pin!(reflector::reflector(writer, stream));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => {
                        tell.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching this agent's pods failed; retrying")
                    }
                }
            }
        });
        tracing::info!(namespace, node = %kube.node(&config.name), "pods on Kubernetes: environments' idle_pause_after does not apply (a pod cannot be frozen); idle pods are stopped after idle_stop_after");
        KubeBackend {
            claims: Api::namespaced(client.clone(), namespace),
            policies: Api::namespaced(client, namespace),
            pods,
            store,
            changes,
            node: kube.node(&config.name),
            agent: config.name.clone(),
            prefix: config.container_prefix.clone(),
            keepalive_cmd: config.keepalive_cmd.clone(),
            config: kube,
            locks: KeyedLock::default(),
            inside: Inside::new(exec, Pipes::configured(config)),
            reflector,
        }
    }

    /// The pod `name` as the watch last saw it.
    fn cached(&self, name: &str) -> Option<Arc<Pod>> {
        self.store
            .get(&ObjectRef::new(name).within(&self.config.namespace))
    }

    /// Waits for the reflector's first list, so "not in the store" means "not there".
    async fn synced(&self) -> Result<(), BackendError> {
        match tokio::time::timeout(FIRST_LIST_TIMEOUT, self.store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(BackendError::Runtime {
                action: "listing this agent's pods",
                message: format!(
                    "the Kubernetes API server did not answer within {} s",
                    FIRST_LIST_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    /// Waits until `check` of the pod `name` (as the watch sees it, `None`: gone)
    /// gives an answer, or `deadline`.
    async fn wait_for<T>(
        &self,
        name: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Pod>) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.changes.subscribe();
        loop {
            if let Some(answer) = check(self.cached(name).as_deref()) {
                return Some(answer);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Deletes the pod `name` and waits until it is gone.
    async fn delete_pod(&self, name: &str) -> Result<(), BackendError> {
        self.inside.forget(name);
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(api_error("deleting the pod", &e)),
        }
        let gone = self
            .wait_for(name, Instant::now() + DELETE_TIMEOUT, |pod| {
                pod.is_none().then_some(())
            })
            .await;
        gone.ok_or_else(|| BackendError::Runtime {
            action: "deleting the pod",
            message: format!(
                "pod {name} was still there {} s after it was deleted",
                DELETE_TIMEOUT.as_secs()
            ),
        })
    }

    /// The plan of `user`'s pod for `env`.
    fn plan<'a>(
        &'a self,
        user: &'a str,
        env: &'a pb::Environment,
        settings: &'a str,
    ) -> PodPlan<'a> {
        let ids = (!env.run_as_root && (env.uid_from_identity || env.gid_from_identity))
            .then_some((env.uid, env.gid));
        PodPlan {
            agent: &self.agent,
            prefix: &self.prefix,
            node: &self.node,
            config: &self.config,
            user,
            env,
            ids,
            settings,
            keepalive_cmd: &self.keepalive_cmd,
        }
    }

    /// Creates `user`'s home claim, NetworkPolicy and pod for `env`, and waits until
    /// the pod runs.
    async fn create(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<PodRef, BackendError> {
        let settings = settings_hash(env);
        let plan = self.plan(user, env, &settings);
        // The pod first: it refuses what this cluster cannot give before anything is made.
        let pod = objects::pod(&plan)?;
        super::seccomp::install_profile(std::path::Path::new(&self.config.seccomp_dir), env)?;
        let claim = objects::home_claim(&plan);
        match self.claims.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                tracing::info!(claim = %objects::claim_name(&self.prefix, user), "created a home claim")
            }
            Err(e) if code(&e) == Some(409) => {}
            Err(e) => return Err(create_error("the home claim", &e)),
        }
        let policy =
            objects::network_policy_resolved(&plan, &resolve_all(&objects::allow_names(env)).await);
        let policy_name = policy
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| name.to_owned());
        self.policies
            .patch(
                &policy_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&policy),
            )
            .await
            .map_err(|e| create_error("the network policy", &e))?;
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(pod = %name, node = %self.node, "created a pod"),
            Err(e) if code(&e) == Some(409) => {
                // There already, though the watch had not shown it: used if it is
                // this student's, once the watch has it.
                let seen = self
                    .wait_for(name, Instant::now() + APPEAR_TIMEOUT, |pod| {
                        pod.map(|p| objects::info_of(p).map(|i| (i.user, i.environment)))
                    })
                    .await;
                match seen {
                    Some(Some((u, e))) if u == user && e == env.name => {
                        tracing::info!(pod = %name, "the pod was there already; using it");
                    }
                    Some(_) => return Err(BackendError::NameTaken(name.to_owned())),
                    None => {
                        return Err(BackendError::CreateFailed(format!(
                            "pod {name} exists but this agent's watch does not show it; try again"
                        )))
                    }
                }
            }
            Err(e) => return Err(create_error("the pod", &e)),
        }
        self.until_running(name).await
    }

    /// Waits until the pod `name` runs; when the cluster says it will not, or it does
    /// not within `pod_ready_timeout_secs`, deletes it and tells why.
    async fn until_running(&self, name: &str) -> Result<PodRef, BackendError> {
        let timeout = Duration::from_secs(self.config.pod_ready_timeout_secs);
        let mut said = String::new();
        let outcome = self
            .wait_for(name, Instant::now() + timeout, |pod| {
                let Some(pod) = pod else {
                    return Some(Err("the pod was deleted while it started".to_owned()));
                };
                match events::progress(pod) {
                    Progress::Ready => Some(pod_ref(pod).ok_or_else(|| {
                        "the pod runs but its status has no container id".to_owned()
                    })),
                    Progress::Failed(why) => Some(Err(why)),
                    Progress::Waiting(what) => {
                        if !what.is_empty() && what != said {
                            tracing::info!(pod = %name, "{what}");
                            said = what;
                        }
                        None
                    }
                }
            })
            .await;
        let why = match outcome {
            Some(Ok(pod)) => return Ok(pod),
            Some(Err(why)) => why,
            None => format!(
                "it did not run within {} s{}",
                timeout.as_secs(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(" ({said})")
                }
            ),
        };
        tracing::warn!(pod = %name, reason = %why, "a pod did not start; deleting it");
        if let Err(e) = self.delete_pod(name).await {
            tracing::warn!(pod = %name, error = %e, "deleting a pod that did not start failed");
        }
        Err(BackendError::StartFailed(why))
    }

    /// Why `pod` should be made anew at a login with no other session, if it should.
    fn renewal(pod: &Pod, env: &pb::Environment) -> Option<Renewal> {
        let max_age = env.lifecycle.as_ref().map_or(0, |l| l.max_age_ms);
        if max_age > 0 {
            let created = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0));
            let age = created.and_then(|c| SystemTime::now().duration_since(c).ok());
            if let Some(age) = age.filter(|a| *a > Duration::from_millis(max_age)) {
                return Some(Renewal::MaxAge(age));
            }
        }
        let info = objects::info_of(pod)?;
        (info.version.settings != objects::label_value(&settings_hash(env)))
            .then_some(Renewal::Outdated)
    }

    /// The running pod `container`, for a connection to `host:port` from inside it.
    fn running_to(&self, container: &str, host: &str, port: u16) -> Result<PodRef, BackendError> {
        self.running(container)
            .map_err(|message| BackendError::ConnectFailed {
                target: format!("{host}:{port}"),
                message,
            })
    }

    /// The running pod `container` (a pod name), for work inside it.
    fn running(&self, container: &str) -> Result<PodRef, String> {
        let pod = self
            .cached(container)
            .ok_or_else(|| format!("pod {container} does not exist on this node"))?;
        if events::progress(&pod) != Progress::Ready {
            return Err(format!("pod {container} is not running"));
        }
        pod_ref(&pod).ok_or_else(|| format!("pod {container} has no running container"))
    }
}

/// The API server's HTTP status of `e`, if it answered.
fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// `e` while `action`, in the operator's words.
fn api_error(action: &'static str, e: &kube::Error) -> BackendError {
    BackendError::Runtime {
        action,
        message: match e {
            kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
            other => other.to_string(),
        },
    }
}

/// Creating `what` failed: what the API server's refusal means.
fn create_error(what: &str, e: &kube::Error) -> BackendError {
    let message = match e {
        kube::Error::Api(status) => match status.code {
            403 if status.message.contains("quota") => format!(
                "the namespace's quota is used up ({}); ask your operator",
                status.message
            ),
            403 => format!(
                "the agent may not create {what} (RBAC or Pod Security): {}",
                status.message
            ),
            422 => format!("Kubernetes refused {what} as invalid: {}", status.message),
            code => format!("creating {what} failed ({code}): {}", status.message),
        },
        other => format!("creating {what} failed: {other}"),
    };
    BackendError::CreateFailed(message)
}

/// What work inside a running `pod` needs; `None` before its student container has
/// an id.
fn pod_ref(pod: &Pod) -> Option<PodRef> {
    let status = pod.status.as_ref()?;
    let container_id = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)?
        .container_id
        .clone()
        .filter(|id| !id.is_empty())?;
    let labels = pod.metadata.labels.as_ref();
    Some(PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone()?,
        container_id,
        ip: status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
        helper: labels.and_then(|l| l.get(LABEL_SPAWN)).map(String::as_str) == Some("helper"),
    })
}

/// The addresses of each of `names`, resolved by the agent (the cluster's DNS); a
/// name that does not resolve gets none (its traffic stays closed).
async fn resolve_all(names: &[String]) -> HashMap<String, Vec<IpAddr>> {
    let mut resolved = HashMap::new();
    for name in names {
        let addrs =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                .await;
        let addrs: Vec<IpAddr> = match addrs {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            _ => {
                tracing::warn!(host = %name, "an allow-list name does not resolve; its traffic stays closed");
                Vec::new()
            }
        };
        resolved.insert(name.clone(), addrs);
    }
    resolved
}

#[async_trait]
impl Backend for KubeBackend {
    async fn ensure_with(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError> {
        BackendError::check_names(user, &env.name)?;
        let name = objects::pod_name(&self.prefix, user, &env.name);
        let _guard = self.locks.lock(&name).await;
        self.synced().await?;
        let mut step = EnsureStep::Creating;
        if let Some(pod) = self.cached(&name) {
            let info = objects::info_of(&pod);
            if info
                .as_ref()
                .is_none_or(|i| i.user != user || i.environment != env.name)
            {
                return Err(BackendError::NameTaken(name));
            }
            let info = info.expect("checked above");
            let renewal = options.renew.then(|| Self::renewal(&pod, env)).flatten();
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Unknown") {
                // Its node does not answer: a new pod would not start either.
                let why = match events::progress(&pod) {
                    Progress::Failed(why) => why,
                    _ => format!("the node of pod {name} is not ready"),
                };
                return Err(BackendError::StartFailed(why));
            }
            if pod.metadata.deletion_timestamp.is_some() {
                self.delete_pod(&name).await?;
                step = EnsureStep::Starting;
            } else if info.state == ContainerState::Stopped {
                tracing::info!(pod = %name, "recreating a pod that stopped (its home is kept)");
                self.delete_pod(&name).await?;
                step = EnsureStep::Starting;
            } else if let Some(why) = renewal {
                let _permit = options.admit(Some(EnsureStep::Recreating(why))).await?;
                tracing::info!(pod = %name, reason = ?why, "recreating a pod at a login with no other session; the home claim is kept");
                self.delete_pod(&name).await?;
                let made = self.create(&name, user, env).await?;
                return Ok(ensured(made, true));
            } else {
                check_ids(&info, env)?;
                let started = info.state != ContainerState::Running;
                let made = match started {
                    false => self.running(&name).map_err(BackendError::StartFailed)?,
                    true => self.until_running(&name).await?,
                };
                return Ok(Ensured {
                    started,
                    ..ensured(made, false)
                });
            }
        }
        let _permit = options.admit(Some(step)).await?;
        let made = self.create(&name, user, env).await?;
        Ok(ensured(made, step == EnsureStep::Creating))
    }

    fn can_pause(&self) -> bool {
        false
    }

    async fn pause(&self, container: &str) -> Result<(), BackendError> {
        Err(BackendError::Runtime {
            action: "pause",
            message: format!("pod {container} cannot be paused: Kubernetes cannot freeze a pod; use idle stop (the pod is deleted, its home kept)"),
        })
    }

    async fn unpause(&self, container: &str) -> Result<(), BackendError> {
        Err(BackendError::Runtime {
            action: "unpause",
            message: format!(
                "pod {container} cannot have been paused: Kubernetes cannot freeze a pod"
            ),
        })
    }

    async fn stop(&self, container: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(container).await;
        tracing::info!(pod = %container, "stopping a pod: deleting it, its home claim kept");
        self.delete_pod(container).await
    }

    /// A pod is the container: removing it is deleting it, as a stop does.
    async fn remove(&self, container: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(container).await;
        tracing::info!(pod = %container, "removing a pod, its home claim kept");
        self.delete_pod(container).await
    }

    async fn remove_home(&self, user: &str) -> Result<(), BackendError> {
        BackendError::check_names(user, "home")?;
        let claim = objects::claim_name(&self.prefix, user);
        match self.claims.delete(&claim, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(%claim, "deleted a home claim");
                Ok(())
            }
            Err(e) if code(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error("deleting the home claim", &e)),
        }
    }

    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError> {
        if spec.argv.is_empty() {
            return Err(BackendError::SpawnFailed("empty command".to_owned()));
        }
        let pod = self.running(container).map_err(BackendError::SpawnFailed)?;
        self.inside.spawn(&pod, spec).await
    }

    async fn reattach(
        &self,
        container: &str,
        id: &str,
        output_offset: u64,
    ) -> Result<(Process, labssh_helper_proto::wire::Attached), BackendError> {
        let pod = self.running(container).map_err(BackendError::SpawnFailed)?;
        self.inside.reattach(&pod, id, output_offset).await
    }

    async fn recorded_ids(&self, container: &str) -> Result<Option<(u32, u32)>, BackendError> {
        Ok(self
            .cached(container)
            .and_then(|pod| objects::info_of(&pod))
            .and_then(|info| info.ids))
    }

    async fn keepalive(
        &self,
        container: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<KeepaliveFile>, BackendError> {
        let Ok(pod) = self.running(container) else {
            return Ok(None);
        };
        let Ok(inside) = super::inside::enter(&pod) else {
            return Ok(None);
        };
        Ok(read_keepalive(&inside, container, user, env).await)
    }

    async fn inventory(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        self.synced().await?;
        Ok(self
            .store
            .state()
            .iter()
            .filter_map(|pod| objects::info_of(pod))
            .collect())
    }

    async fn inventory_changed(&self) {
        let mut changes = self.changes.subscribe();
        let _ = changes.changed().await;
    }

    async fn connect_tcp(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let pod = self.running_to(container, host, port)?;
        self.inside.connect_tcp(&pod, host, port).await
    }

    async fn resolve(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let pod = self.running_to(container, host, port)?;
        self.inside.resolve(&pod, host, port).await
    }

    async fn listeners(&self, container: &str) -> Result<Vec<SocketAddr>, BackendError> {
        let pod = self
            .running(container)
            .map_err(|message| BackendError::Runtime {
                action: "reading its listening sockets",
                message,
            })?;
        self.inside.listeners(&pod).await
    }

    async fn container_addresses(&self, container: &str) -> Result<Vec<IpAddr>, BackendError> {
        Ok(self
            .cached(container)
            .and_then(|pod| pod_ref(&pod))
            .and_then(|pod| pod.ip)
            .into_iter()
            .collect())
    }

    async fn connect_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let pod = self
            .running(container)
            .map_err(|message| BackendError::ConnectFailed {
                target: path.to_owned(),
                message,
            })?;
        self.inside.connect_unix(&pod, path, run_as).await
    }

    async fn listen_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<SocketListener, BackendError> {
        let pod = self
            .running(container)
            .map_err(|message| BackendError::ListenFailed {
                address: path.to_owned(),
                message,
            })?;
        self.inside.listen_unix(&pod, path, run_as).await
    }

    async fn listen_tcp(
        &self,
        container: &str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, BackendError> {
        let pod = self
            .running(container)
            .map_err(|message| BackendError::ListenFailed {
                address: addr.to_string(),
                message,
            })?;
        self.inside.listen_tcp(&pod, addr).await
    }

    async fn find_executable(
        &self,
        container: &str,
        candidates: &[&str],
    ) -> Result<Option<String>, BackendError> {
        let pod = self
            .running(container)
            .map_err(|message| BackendError::Runtime {
                action: "looking for a program in the pod",
                message,
            })?;
        self.inside.find_executable(&pod, candidates).await
    }

    async fn started_at(&self, container: &str) -> Result<Option<SystemTime>, BackendError> {
        Ok(self.cached(container).and_then(|pod| {
            let student = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find(|c| c.name == CONTAINER)?
                .clone();
            let started = student.state?.running?.started_at?;
            Some(SystemTime::from(started.0))
        }))
    }
}

/// What an ensure tells of pod `made`.
fn ensured(made: PodRef, created: bool) -> Ensured {
    Ensured {
        container_id: made.name.clone(),
        name: made.name,
        created,
        started: true,
        notice: String::new(),
    }
}

/// A pod of an environment taking ids from the identity serves only the ids it was
/// made with (see Docker's `ids::check`).
fn check_ids(info: &ContainerInfo, env: &pb::Environment) -> Result<(), BackendError> {
    if env.run_as_root || !(env.uid_from_identity || env.gid_from_identity) {
        return Ok(());
    }
    match info.ids {
        Some(ids) if ids == (env.uid, env.gid) => Ok(()),
        made => {
            let (made_uid, made_gid) = made.unwrap_or((0, 0));
            Err(BackendError::IdsChanged {
                made_uid,
                made_gid,
                uid: env.uid,
                gid: env.gid,
            })
        }
    }
}

#[cfg(test)]
mod tests;
