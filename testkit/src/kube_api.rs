//! A fake Kubernetes API server for the agent's Kubernetes tests, kube-rs style: the client
//! talks to a `tower_test` mock service, answered here from an in-memory namespace
//! of pods, claims and NetworkPolicies, with real list and watch semantics (label
//! selectors, resource versions, a watch stream of events) and the errors the API
//! server gives (404, 409, and refusals a test asks for). What the kubelet does (a
//! pod running, failing) the tests do with [`Fake::set_status`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The response body: whole, or a watch's stream.
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Where a watch's events go.
type WatchSender = mpsc::UnboundedSender<Result<http_body::Frame<Bytes>, Infallible>>;

/// One request as the fake saw it: `POST pods`, `DELETE pods/NAME`, ...
pub type Seen = String;

/// The fake's state.
#[derive(Default)]
struct State {
    /// Objects by resource (`pods`, `persistentvolumeclaims`, `networkpolicies`) and name.
    objects: HashMap<String, BTreeMap<String, Value>>,
    /// The last resource version handed out.
    version: u64,
    /// Open pod watches and their label selectors.
    watches: Vec<(Vec<(String, String)>, WatchSender)>,
    /// Every request but watches, in order.
    seen: Vec<Seen>,
    /// Watches from an older resource version than this are answered 410 Gone, as
    /// when the API server's history was compacted: the client must list again.
    oldest: u64,
    /// Refusals asked for: (method, resource) → (code, message).
    refuse: HashMap<(String, String), (u16, String)>,
}

/// The fake API server's handle for a test.
#[derive(Clone)]
pub struct Fake(Arc<Mutex<State>>);

impl Fake {
    /// A client talking to a new fake, and its handle.
    pub fn start() -> (kube::Client, Fake) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let fake = Fake(Arc::default());
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let fake = serving.clone();
                tokio::spawn(async move {
                    let response = fake.answer(request).await;
                    reply.send_response(response);
                });
            }
        });
        (kube::Client::new(service, "default"), fake)
    }

    /// The state.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request but watches so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The pod `name`, if there is one.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        let state = self.lock();
        let pod = state.objects.get("pods")?.get(name)?;
        serde_json::from_value(pod.clone()).ok()
    }

    /// Every pod, by name.
    pub fn pods(&self) -> Vec<Pod> {
        let state = self.lock();
        state
            .objects
            .get("pods")
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(|p| serde_json::from_value(p.clone()).ok())
            .collect()
    }

    /// Whether there is a `resource` named `name`.
    pub fn has(&self, resource: &str, name: &str) -> bool {
        self.lock()
            .objects
            .get(resource)
            .is_some_and(|o| o.contains_key(name))
    }

    /// The next `method` on `resource` is refused with `code` and `message`.
    pub fn refuse(&self, method: &str, resource: &str, code: u16, message: &str) {
        self.lock().refuse.insert(
            (method.to_owned(), resource.to_owned()),
            (code, message.to_owned()),
        );
    }

    /// Puts `pod` in as if someone else had made it.
    pub fn insert_pod(&self, pod: Pod) {
        let mut state = self.lock();
        let mut value = serde_json::to_value(pod).expect("a pod serializes");
        stamp(&mut state, &mut value);
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        broadcast(&mut state, "ADDED", &value);
        state
            .objects
            .entry("pods".into())
            .or_default()
            .insert(name, value);
    }

    /// Sets the pod `name`'s status, as the kubelet would, and tells the watches.
    pub fn set_status(&self, name: &str, status: PodStatus) {
        self.change_status(name, status, true);
    }

    /// Sets the pod `name`'s status while no watch hears of it (a watch that
    /// dropped): only a new list shows it.
    pub fn set_status_unwatched(&self, name: &str, status: PodStatus) {
        self.change_status(name, status, false);
    }

    /// Ends every open watch and forgets the history before now, so the client's
    /// next watch is told 410 Gone and must list again.
    pub fn drop_watches(&self) {
        let mut state = self.lock();
        state.watches.clear();
        state.oldest = state.version;
    }

    /// Sets a pod's status, telling the watches if `tell`.
    fn change_status(&self, name: &str, status: PodStatus, tell: bool) {
        let mut state = self.lock();
        let Some(mut pod) = state.objects.get("pods").and_then(|p| p.get(name)).cloned() else {
            return;
        };
        pod["status"] = serde_json::to_value(status).expect("a status serializes");
        stamp(&mut state, &mut pod);
        if tell {
            broadcast(&mut state, "MODIFIED", &pod);
        }
        state
            .objects
            .entry("pods".into())
            .or_default()
            .insert(name.to_owned(), pod);
    }

    /// Answers one request.
    async fn answer(&self, request: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        // /api/v1/namespaces/NS/RESOURCE[/NAME] or /apis/GROUP/VERSION/namespaces/NS/...
        let path: Vec<&str> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let Some(at) = path.iter().position(|s| *s == "namespaces") else {
            return status(404, "NotFound", "no such path");
        };
        let namespace = path.get(at + 1).copied().unwrap_or_default().to_owned();
        let resource = path.get(at + 2).copied().unwrap_or_default().to_owned();
        let name = path.get(at + 3).map(|s| (*s).to_owned());
        let method = parts.method.clone();
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let mut state = self.lock();
        if !watching {
            state.seen.push(match &name {
                Some(name) => format!("{method} {resource}/{name}"),
                None => format!("{method} {resource}"),
            });
        }
        if let Some((code, message)) = state.refuse.remove(&(method.to_string(), resource.clone()))
        {
            return status(code, "Refused", &message);
        }
        let selector = selector(query.get("labelSelector"));
        match (method, name) {
            (Method::GET, None) if watching => {
                let (tx, rx) = mpsc::unbounded_channel();
                let from: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if from < state.oldest {
                    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {from} ({})", state.oldest), "reason": "Expired", "code": 410}});
                    let _ = tx.send(Ok(http_body::Frame::data(Bytes::from(format!("{gone}\n")))));
                } else {
                    state.watches.push((selector, tx));
                }
                let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
                Response::new(StreamBody::new(stream).boxed_unsync())
            }
            (Method::GET, None) => {
                let items: Vec<Value> = state
                    .objects
                    .get(&resource)
                    .into_iter()
                    .flat_map(|o| o.values())
                    .filter(|o| matches(&selector, o))
                    .cloned()
                    .collect();
                let version = state.version.to_string();
                whole(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => {
                match state.objects.get(&resource).and_then(|o| o.get(&name)) {
                    Some(object) => whole(200, object),
                    None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
                }
            }
            (Method::POST, None) => {
                let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if state
                    .objects
                    .get(&resource)
                    .is_some_and(|o| o.contains_key(&name))
                {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{resource} \"{name}\" already exists"),
                    );
                }
                object["metadata"]["namespace"] = json!(namespace);
                object["metadata"]["uid"] = json!(format!("uid-{name}-{}", state.version + 1));
                object["metadata"]["creationTimestamp"] = json!("2026-12-03T12:00:00Z");
                if resource == "pods" {
                    object["status"] = json!({"phase": "Pending"});
                }
                stamp(&mut state, &mut object);
                if resource == "pods" {
                    broadcast(&mut state, "ADDED", &object);
                }
                state
                    .objects
                    .entry(resource)
                    .or_default()
                    .insert(name, object.clone());
                whole(201, &object)
            }
            (Method::PATCH, Some(name)) => {
                let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "not JSON");
                };
                object["metadata"]["namespace"] = json!(namespace);
                stamp(&mut state, &mut object);
                state
                    .objects
                    .entry(resource)
                    .or_default()
                    .insert(name, object.clone());
                whole(200, &object)
            }
            (Method::DELETE, Some(name)) => {
                let Some(mut object) = state
                    .objects
                    .get_mut(&resource)
                    .and_then(|o| o.remove(&name))
                else {
                    return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
                };
                object["metadata"]["deletionTimestamp"] = json!("2026-12-03T12:30:00Z");
                stamp(&mut state, &mut object);
                if resource == "pods" {
                    broadcast(&mut state, "MODIFIED", &object);
                    broadcast(&mut state, "DELETED", &object);
                }
                whole(200, &object)
            }
            (method, _) => status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not served here"),
            ),
        }
    }
}

/// What a kubelet reports for a running pod whose one container `container` runs
/// `image` (`image_id`) with the runtime's id `container_id` (`containerd://…`,
/// `docker://…`), at `pod_ip` if it has one.
pub fn running_status(
    container: &str,
    image: &str,
    image_id: &str,
    container_id: &str,
    pod_ip: Option<&str>,
) -> PodStatus {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus};
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: pod_ip.map(str::to_owned),
        container_statuses: Some(vec![ContainerStatus {
            name: container.into(),
            image: image.into(),
            image_id: image_id.into(),
            container_id: Some(container_id.into()),
            ready: true,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Gives `object` the next resource version.
fn stamp(state: &mut State, object: &mut Value) {
    state.version += 1;
    object["metadata"]["resourceVersion"] = json!(state.version.to_string());
}

/// Tells every pod watch whose selector matches `object` of it.
fn broadcast(state: &mut State, kind: &str, object: &Value) {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
    line.push(b'\n');
    let line = Bytes::from(line);
    state.watches.retain(|(selector, tx)| {
        !matches(selector, object) || tx.send(Ok(http_body::Frame::data(line.clone()))).is_ok()
    });
}

/// An equality-only label selector, parsed.
fn selector(given: Option<&String>) -> Vec<(String, String)> {
    given
        .into_iter()
        .flat_map(|s| s.split(','))
        .filter_map(|term| term.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `object`'s labels satisfy `selector`.
fn matches(selector: &[(String, String)], object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector
        .iter()
        .all(|(k, v)| labels[k].as_str() == Some(v.as_str()))
}

/// A whole JSON answer.
fn whole(code: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(code).expect("a valid code");
    response
}

/// A `Status` answer, as the API server gives for errors.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    whole(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}
