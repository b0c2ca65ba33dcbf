//! The web front door's deployment files: deploy/kubernetes rendered by `kubectl
//! kustomize` as `kubectl apply -k` would (read through the PyYAML of the venv
//! `scripts/setup-host.sh` makes for `scripts/validate-kubernetes.sh`), the Secrets
//! `make-secrets.sh` writes, and `labssh web` started from the rendered ConfigMap
//! and those Secrets laid out as the pod mounts them; the compose file's web
//! replicas.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn venv() -> PathBuf {
    std::env::var_os("LABSSH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/labssh-venv"))
}

/// A YAML stream as JSON values, one per document (empty ones dropped).
fn yaml_documents(yaml: &[u8]) -> Vec<Value> {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-host.sh (its venv has PyYAML)",
        python.display()
    );
    let mut child = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read the YAML");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// kubectl with kustomize v5, found as scripts/validate-kubernetes.sh finds it.
fn kubectl() -> PathBuf {
    let candidates = [PathBuf::from("kubectl"), venv().join("bin/kubectl")];
    for candidate in candidates {
        let Ok(out) = Command::new(&candidate)
            .args(["version", "--client"])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let v5 = text.lines().any(|l| {
            l.strip_prefix("Kustomize Version: v")
                .and_then(|v| v.split('.').next())
                .and_then(|major| major.parse::<u32>().ok())
                .is_some_and(|major| major >= 5)
        });
        if v5 {
            return candidate;
        }
    }
    panic!("no kubectl with kustomize v5 or later: run scripts/setup-host.sh");
}

/// Every object of `overlay`, as `kubectl apply -k` would send them.
fn rendered(overlay: &str) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(repo("deploy/kubernetes/overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&out.stdout)
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn port_of(addr: &str) -> u64 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port()
        .into()
}

/// Runs make-secrets.sh into `dir` with `args`; its Secrets, and what it said.
fn make_secrets(dir: &Path, args: &[&str]) -> (Vec<Value>, String) {
    let out = Command::new("bash")
        .arg(repo("deploy/kubernetes/make-secrets.sh"))
        .arg("--dir")
        .arg(dir)
        .args(["--labssh", env!("CARGO_BIN_EXE_labssh"), "--node", "node-a"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "make-secrets.sh: {stderr}");
    (yaml_documents(&out.stdout), stderr)
}

fn secret_file(secrets: &[Value], name: &str, key: &str) -> Vec<u8> {
    let data = &object(secrets, "Secret", name)["data"];
    assert!(data.get(key).is_some(), "Secret {name} has no {key}");
    // An empty file is an empty value, which YAML reads as null.
    let data = data[key].as_str().unwrap_or("");
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_else(|e| panic!("Secret {name} {key} is not base64: {e}"))
}

/// Whether `selector` (a LabelSelector) selects a pod labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap() {
                    "In" => label(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    other => panic!("operator {other}"),
                }
            })
        });
    by_labels && by_expressions
}

/// The pod template's labels of a workload.
fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

/// The NetworkPolicies of namespace labssh that apply to pods labelled `labels`.
fn policies_of<'a>(objects: &'a [Value], labels: &Value) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["namespace"] == "labssh")
        .filter(|o| selects(&o["spec"]["podSelector"], labels))
        .collect()
}

/// Every (peer, port) a pod labelled `labels` may send to: the peer as written
/// in the policy (`null` for anywhere).
fn egress(objects: &[Value], labels: &Value) -> Vec<(Value, Value)> {
    let mut allowed = Vec::new();
    for policy in policies_of(objects, labels) {
        for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
            let peers = rule["to"].as_array().cloned().unwrap_or(vec![Value::Null]);
            let ports = rule["ports"]
                .as_array()
                .cloned()
                .unwrap_or(vec![Value::Null]);
            for peer in &peers {
                for port in &ports {
                    allowed.push((peer.clone(), port["port"].clone()));
                }
            }
        }
    }
    allowed
}

/// Whether pods labelled `labels` take `port` from `from` (a NetworkPolicy peer
/// matcher over each rule's `from`: `None` means the rule admits anyone).
fn admits(
    objects: &[Value],
    labels: &Value,
    port: u64,
    from: impl Fn(Option<&Value>) -> bool,
) -> bool {
    policies_of(objects, labels).iter().any(|policy| {
        policy["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let port_ok = rule["ports"]
                    .as_array()
                    .is_none_or(|ports| ports.iter().any(|p| p["port"] == port));
                let from_ok = match rule["from"].as_array() {
                    None => from(None),
                    Some(peers) => peers.iter().any(|peer| from(Some(peer))),
                };
                port_ok && from_ok
            })
    })
}

/// A pod peer of the same namespace selecting pods labelled `labels`.
fn pod_peer(peer: Option<&Value>, labels: &Value) -> bool {
    peer.is_some_and(|p| {
        p.get("namespaceSelector").is_none()
            && p.get("ipBlock").is_none()
            && p.get("podSelector").is_some_and(|s| selects(s, labels))
    })
}

/// The overlay's web objects against each other, the config the pods read and the
/// proxy's: ports, probes, mounts, balancer, scaling, and NetworkPolicies that let
/// the front door do what the proxies do.
fn check_overlay(overlay: &str, objects: &[Value]) {
    let web = object(objects, "Deployment", "labssh-web");
    let proxy = object(objects, "Deployment", "labssh-proxy");
    let (web_pod, proxy_pod) = (
        &web["spec"]["template"]["spec"],
        &proxy["spec"]["template"]["spec"],
    );
    let container = &web_pod["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!(["web", "--config", "/etc/labssh/config/proxy.toml"]),
        "{overlay}"
    );
    // The very file the proxies read: the rendered ConfigMap.
    let config_volume = web_pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(
        config_volume["configMap"]["name"], proxy_pod["volumes"][0]["configMap"]["name"],
        "{overlay}: web and proxy pods mount one ConfigMap"
    );
    let config_map = object(
        objects,
        "ConfigMap",
        config_volume["configMap"]["name"].as_str().unwrap(),
    );
    let text = config_map["data"]["proxy.toml"].as_str().unwrap();
    let parsed: toml::Value = toml::from_str(text).unwrap();
    let (listen, http) = (
        parsed["web"]["listen"].as_str().unwrap(),
        parsed["web"]["http"].as_str().unwrap(),
    );
    assert_ne!(
        port_of(http),
        port_of(parsed["http"].as_str().unwrap()),
        "{overlay}: web.http has a port of its own"
    );
    let ports = container["ports"].as_array().unwrap();
    let named = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{overlay}: no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(named("https"), port_of(listen), "{overlay}: web.listen");
    assert_eq!(named("http"), port_of(http), "{overlay}: web.http");
    assert!(
        port_of(listen) >= 1024,
        "{overlay}: no capability to bind below 1024"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"], "http",
            "{overlay}: {probe}"
        );
    }
    let annotations = &web["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port_of(http).to_string());
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    // Locked down as the proxies are.
    assert_eq!(
        web_pod["securityContext"], proxy_pod["securityContext"],
        "{overlay}"
    );
    assert_eq!(
        container["securityContext"], proxy_pod["containers"][0]["securityContext"],
        "{overlay}"
    );
    assert_eq!(web_pod["automountServiceAccountToken"], false);
    assert!(
        container["lifecycle"]["preStop"].is_object(),
        "{overlay}: preStop"
    );
    let spread = &web_pod["topologySpreadConstraints"][0];
    assert!(
        selects(&spread["labelSelector"], pod_labels(web)),
        "{overlay}: spread"
    );
    assert_eq!(
        spread["whenUnsatisfiable"], proxy_pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "{overlay}: spread as strict as the proxies'"
    );

    // Its Service: 443 to web.listen, the proxies' balancer annotations.
    let service = object(objects, "Service", "labssh-web");
    let proxy_service = object(objects, "Service", "labssh-proxy");
    assert!(selects(
        &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
        pod_labels(web)
    ));
    assert!(!selects(
        &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
        pod_labels(proxy)
    ));
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");
    assert_eq!(
        service["spec"]["type"], proxy_service["spec"]["type"],
        "{overlay}"
    );
    assert_eq!(
        service["metadata"]["annotations"], proxy_service["metadata"]["annotations"],
        "{overlay}: PROXY protocol as the proxies' balancer"
    );
    let hpa = object(objects, "HorizontalPodAutoscaler", "labssh-web");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "labssh-web");
    assert!(web["spec"]["replicas"].as_u64() >= hpa["spec"]["minReplicas"].as_u64());
    let pdb = object(objects, "PodDisruptionBudget", "labssh-web");
    assert!(selects(&pdb["spec"]["selector"], pod_labels(web)));
    assert!(!selects(&pdb["spec"]["selector"], pod_labels(proxy)));

    // NetworkPolicies: browsers in on web.listen from anywhere, Prometheus on
    // web.http from its namespace; out wherever the proxies go.
    let labels = pod_labels(web);
    assert!(
        admits(objects, labels, port_of(listen), |peer| peer.is_none()),
        "{overlay}: the balancer's browsers reach web.listen"
    );
    assert!(
        admits(objects, labels, port_of(http), |peer| peer.is_some_and(
            |p| {
                p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
            }
        )),
        "{overlay}: Prometheus reaches web.http"
    );
    let proxy_egress = egress(objects, pod_labels(proxy));
    let web_egress = egress(objects, labels);
    assert!(!proxy_egress.is_empty());
    for allowed in &proxy_egress {
        assert!(
            web_egress.contains(allowed),
            "{overlay}: the proxies may reach {allowed:?}, the web front door may not"
        );
    }
    // And whoever takes the proxies' calls takes the front door's.
    let controller = object(objects, "Deployment", "labssh-controller");
    let agent = object(objects, "DaemonSet", "labssh-agent");
    let mut callees = vec![(pod_labels(controller), 7000), (pod_labels(agent), 7001)];
    if let Some(redis) = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == "labssh-redis")
    {
        callees.push((pod_labels(redis), 6379));
    }
    for (callee, port) in callees {
        assert!(admits(objects, callee, port, |p| pod_peer(
            p,
            pod_labels(proxy)
        )));
        assert!(
            admits(objects, callee, port, |p| pod_peer(p, labels)),
            "{overlay}: {callee} takes the proxies' calls on {port}, not the front door's"
        );
    }
}

/// `/etc/labssh/...` of `deployment`'s first container laid out under `root`: each
/// mounted Secret's keys (from `secrets`) and ConfigMap's as files.
fn lay_out(objects: &[Value], secrets: &[Value], deployment: &Value, root: &Path) {
    let pod = &deployment["spec"]["template"]["spec"];
    for mount in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let dir = root.join(
            mount["mountPath"]
                .as_str()
                .unwrap()
                .strip_prefix("/etc/labssh/")
                .unwrap(),
        );
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            let secret = object(secrets, "Secret", name);
            for key in secret["data"].as_object().unwrap().keys() {
                std::fs::write(dir.join(key), secret_file(secrets, name, key)).unwrap();
            }
        } else {
            let name = volume["configMap"]["name"].as_str().unwrap();
            for (key, text) in object(objects, "ConfigMap", name)["data"]
                .as_object()
                .unwrap()
            {
                std::fs::write(dir.join(key), text.as_str().unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn kubernetes_web_front_door() {
    let dir = tempfile::tempdir().unwrap();
    let (secrets, said) = make_secrets(&dir.path().join("secrets"), &[]);
    assert!(said.contains("SELF-SIGNED"), "{said}");
    for overlay in ["dev", "production"] {
        let objects = rendered(overlay);
        check_overlay(overlay, &objects);

        // The pod's files: every Secret it mounts is one make-secrets.sh writes, and
        // every file its config names is in them.
        let web = object(&objects, "Deployment", "labssh-web");
        let root = dir.path().join(overlay);
        lay_out(&objects, &secrets, web, &root);
        let etc = format!("{}/", root.display());
        let text = std::fs::read_to_string(root.join("config/proxy.toml"))
            .unwrap()
            .replace("/etc/labssh/", &etc);
        let config =
            labssh_proxy::Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{overlay}: {e}"));
        assert!(config.web.problems().is_empty(), "{overlay}");
        assert!(config.tls.enabled(), "{overlay}");
        for path in [
            &config.users_file,
            &config.cache_key_file,
            &config.web.tls_cert,
            &config.web.tls_key,
            &config.web.cookie_key_file,
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
        ] {
            assert!(
                path.is_file(),
                "{overlay}: {} is not in the pod",
                path.display()
            );
        }
        assert_eq!(
            config.cache_key_file.parent(),
            config.web.cookie_key_file.parent(),
            "{overlay}: the cookie key ships with the cache key"
        );

        // And `labssh web` starts from them: certificate, key and cookie key load.
        let (listen, http) = (config.web.listen.clone(), config.web.http.clone());
        let local = text
            .replace(&format!("\"{listen}\""), "\"127.0.0.1:0\"")
            .replace(&format!("\"{http}\""), "\"127.0.0.1:0\"");
        let path = root.join("web.toml");
        std::fs::write(&path, local).unwrap();
        let mut web = crate::labssh("web", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = web.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let started = loop {
            match rx.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(line) if line.contains("web front door listening for HTTPS") => break true,
                Ok(line) => seen.push(line),
                Err(_) => break false,
            }
        };
        let _ = web.kill();
        let _ = web.wait();
        assert!(
            started,
            "{overlay}: labssh web did not start:\n{}",
            seen.join("\n")
        );
    }
}

#[test]
fn make_secrets_web_certificate_and_cookie_key() {
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept");
    let (first, _) = make_secrets(&kept, &[]);
    let (second, said) = make_secrets(&kept, &[]);
    assert!(
        !said.contains("SELF-SIGNED"),
        "no new certificate on a rerun: {said}"
    );
    for (name, key) in [
        ("labssh-users", "web-cookie.key"),
        ("labssh-web-tls", "tls.crt"),
        ("labssh-web-tls", "tls.key"),
    ] {
        assert_eq!(
            secret_file(&first, name, key),
            secret_file(&second, name, key),
            "a rerun keeps {name} {key}"
        );
    }
    let cookie = String::from_utf8(secret_file(&first, "labssh-users", "web-cookie.key")).unwrap();
    assert_eq!(hex::decode(cookie.trim()).unwrap().len(), 32);
    assert_ne!(
        cookie,
        String::from_utf8(secret_file(&first, "labssh-users", "cache.key")).unwrap()
    );
    assert_eq!(
        object(&first, "Secret", "labssh-web-tls")["type"],
        "kubernetes.io/tls"
    );

    // The self-signed certificate names the domain and its wildcard.
    let names = |pem: &[u8]| -> Vec<String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    let made = names(&secret_file(&first, "labssh-web-tls", "tls.crt"));
    assert!(
        made.contains(&"DNSName(lab.example.edu)".to_string()),
        "{made:?}"
    );
    assert!(
        made.contains(&"DNSName(*.lab.example.edu)".to_string()),
        "{made:?}"
    );
    let (other, _) = make_secrets(
        &dir.path().join("other"),
        &["--web-domain", "jupyter.example.org"],
    );
    let made = names(&secret_file(&other, "labssh-web-tls", "tls.crt"));
    assert!(
        made.contains(&"DNSName(*.jupyter.example.org)".to_string()),
        "{made:?}"
    );

    // The operator's own certificate is shipped as it is.
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    let (cert, key) = (own.join("fullchain.pem"), own.join("privkey.pem"));
    std::fs::copy(kept.join("web.crt"), &cert).unwrap();
    std::fs::copy(kept.join("web.key"), &key).unwrap();
    let (given, said) = make_secrets(
        &dir.path().join("given"),
        &[
            "--web-cert",
            cert.to_str().unwrap(),
            "--web-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        !said.contains("self-signed") && !said.contains("SELF-SIGNED"),
        "{said}"
    );
    assert_eq!(
        secret_file(&given, "labssh-web-tls", "tls.crt"),
        std::fs::read(&cert).unwrap()
    );
    assert_eq!(
        secret_file(&given, "labssh-web-tls", "tls.key"),
        std::fs::read(&key).unwrap()
    );
    assert!(!dir.path().join("given/web.crt").exists());
    // Half a pair, or a file that is not one, is refused.
    for args in [
        vec!["--web-cert", cert.to_str().unwrap()],
        vec![
            "--web-cert",
            key.to_str().unwrap(),
            "--web-key",
            key.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("bash")
            .arg(repo("deploy/kubernetes/make-secrets.sh"))
            .arg("--dir")
            .arg(dir.path().join("refused"))
            .args(["--labssh", env!("CARGO_BIN_EXE_labssh"), "--node", "node-a"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
    }
}

/// compose.yaml's web replicas run from the proxies' configs, share ./etc
/// writable (the cookie key is made there), sit on both networks, and HAProxy
/// publishes 443 in front of them.
#[test]
fn compose_web_replicas() {
    let text = std::fs::read(repo("deploy/compose/compose.yaml")).unwrap();
    let compose = yaml_documents(&text).remove(0);
    let services = compose["services"].as_object().unwrap();
    let config_of = |role: &str| -> Vec<(String, String)> {
        services
            .iter()
            .filter(|(_, s)| s["command"][0] == role)
            .map(|(name, s)| {
                assert_eq!(s["command"][1], "--config", "{name}");
                (name.clone(), s["command"][2].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let proxies = config_of("proxy");
    let webs = config_of("web");
    assert!(webs.len() >= 2, "{webs:?}");
    for (name, config) in &webs {
        assert!(
            proxies.iter().any(|(_, c)| c == config),
            "{name} runs from {config}, which no proxy does"
        );
        let service = &services[name];
        assert_eq!(
            service["volumes"],
            serde_json::json!(["./etc:/etc/labssh"]),
            "{name}"
        );
        for network in ["control", "edge"] {
            assert!(
                service["networks"]
                    .as_array()
                    .unwrap()
                    .contains(&network.into()),
                "{name} on {network}"
            );
        }
        assert!(services["haproxy"]["depends_on"]
            .as_array()
            .unwrap()
            .contains(&name.as_str().into()));
    }
    assert!(services["haproxy"]["ports"]
        .as_array()
        .unwrap()
        .contains(&"443:443".into()));
}
