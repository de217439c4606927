//! The deployment files under `docker/` cannot drift from the code.
//!
//! Docker and Kubernetes cannot run here, so these tests check everything
//! about those files that can be checked without them:
//!
//! - every `*.toml` under `config/` and `docker/` loads exactly as `cutover
//!   run` would load it, and so does the config embedded in each Kubernetes
//!   ConfigMap;
//! - every YAML file under `docker/` parses, and the Compose file, the
//!   Kubernetes manifests and the Prometheus config agree with the configs
//!   they carry (ports, paths, service names, grace periods);
//! - the Grafana dashboard and the alert rules query only metrics that
//!   `src/metrics.rs` declares, and the dashboard shows all of them;
//! - each alert fires on the cases of `docker/prometheus/alerts.test.yml`
//!   that should fire it and on no other (run by promtool, where installed);
//! - the Dockerfile has its health check, user, ports, and a `CMD` whose
//!   config path is where it copies `docker/cutover.toml`, and it ships the
//!   profile-guided build, whose training config
//!   (`examples/pgo_training.toml`) loads;
//! - the real binary accepts the image's default config, serves `/healthz`
//!   with it (also through the image's health-check script), and exits 0 on
//!   SIGTERM after `/ready` turned 503.
//!
//! A failure names the file to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cutover::config::{self, Config};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support;

// DEADLINE (20 s) also covers the image config's 5 s `shutdown_delay`.
use support::process::{cutover, Running, DEADLINE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `path` relative to the crate root, for messages.
fn display(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Every file under `dir` (recursively) whose name ends in one of `exts`, sorted.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

// ---- (a) configs ----------------------------------------------------------

/// Every config file shipped, in `config/` and anywhere under `docker/`.
/// (Validation opens no file the config names except a pool's `ca_file`;
/// none of these configs has one, so container paths such as
/// `/etc/cutover-token/token` need not exist here.)
#[test]
fn every_toml_config_loads() {
    let mut checked = Vec::new();
    for dir in ["config", "docker"] {
        for path in files_under(&root().join(dir), &["toml"]) {
            if let Err(e) = config::load(&path) {
                panic!("{} does not load: {e}", display(&path));
            }
            checked.push(display(&path));
        }
    }
    for expected in ["config/cutover.toml", "docker/cutover.toml", "docker/compose/cutover.toml"] {
        assert!(checked.iter().any(|c| c == expected), "{expected} was not checked; found {checked:?}");
    }
}

/// The config the profile-guided build trains with: the image build runs
/// it, so a config change that breaks it breaks `docker build`.
#[test]
fn the_pgo_training_config_loads() {
    let template = read("examples/pgo_training.toml");
    let text = template
        .replace("@WORKERS@", "2")
        .replace("@HTTP1_UPSTREAM@", "127.0.0.1:18001")
        .replace("@H2_UPSTREAM@", "127.0.0.1:18002");
    assert!(!text.contains('@'), "a placeholder is left in examples/pgo_training.toml:\n{text}");
    let config = config::parse(Path::new("examples/pgo_training.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.workers, Some(2));
    assert!(read("examples/pgo_training.rs").contains("include_str!(\"pgo_training.toml\")"));
}

// ---- (b) YAML -------------------------------------------------------------

/// The documents of a YAML file (a `---` separated stream).
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// The one document of a single-document YAML file.
fn yaml_doc(rel: &str) -> Yaml {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// `y[k0][k1]...`; `Yaml::BadValue` where a key is missing.
fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

/// The string at `path`, or a panic naming `what`.
fn str_at<'a>(y: &'a Yaml, path: &[&str], what: &str) -> &'a str {
    at(y, path).as_str().unwrap_or_else(|| panic!("{what}: no string at {}", path.join(".")))
}

/// The sequence at `path` (empty when missing).
fn seq_at<'a>(y: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(y, path).as_vec().map(Vec::as_slice).unwrap_or(&[])
}

/// The keys of the mapping at `path`.
fn keys_at(y: &Yaml, path: &[&str]) -> Vec<String> {
    at(y, path).as_hash().map(|h| h.keys().filter_map(|k| k.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The strings of a sequence.
fn strings(seq: &[Yaml]) -> Vec<&str> {
    seq.iter().filter_map(Yaml::as_str).collect()
}

/// `shutdown_delay + drain_timeout`: how long a graceful shutdown can take.
fn shutdown_budget(config: &Config) -> Duration {
    config.server.shutdown_delay + config.server.drain_timeout
}

/// The value after `--config` in a `cutover run` argument list.
fn config_arg<'a>(args: &[&'a str], what: &str) -> &'a str {
    let at = args.iter().position(|a| *a == "--config").unwrap_or_else(|| panic!("{what}: no --config in {args:?}"));
    args.get(at + 1).unwrap_or_else(|| panic!("{what}: --config without a value in {args:?}"))
}

#[test]
fn every_yaml_file_under_docker_parses() {
    let files = files_under(&root().join("docker"), &["yml", "yaml"]);
    assert!(files.len() >= 5, "expected the compose file, Prometheus files and Kubernetes manifests, found {files:?}");
    for path in files {
        let rel = display(&path);
        let docs = yaml_docs(&rel);
        assert!(!docs.is_empty(), "{rel}: no YAML document");
        for (i, doc) in docs.iter().enumerate() {
            assert!(doc.is_hash(), "{rel}: document {} is not a mapping: {doc:?}", i + 1);
        }
    }
}

#[test]
fn compose_file_runs_the_proxy_in_front_of_the_demo_services() {
    let compose = yaml_doc("docker/docker-compose.yml");
    let services = keys_at(&compose, &["services"]);
    for name in ["cutover", "cutover-2", "etcd", "blue", "green", "canary", "prometheus"] {
        assert!(services.iter().any(|s| s == name), "docker/docker-compose.yml: no service {name:?} in {services:?}");
    }
    let cutover = &compose["services"]["cutover"];
    assert_eq!(str_at(cutover, &["build", "context"], "cutover service"), "..", "build from the repository root");
    assert_eq!(str_at(cutover, &["build", "dockerfile"], "cutover service"), "docker/Dockerfile");

    // Every bind mount of every service exists, relative to docker/.
    for service in &services {
        for volume in strings(seq_at(&compose, &["services", service, "volumes"])) {
            let source = volume.split(':').next().unwrap_or_default();
            if source.starts_with('.') {
                let path = root().join("docker").join(source);
                assert!(
                    path.exists(),
                    "docker/docker-compose.yml: service {service} mounts {source}, which is missing"
                );
            }
        }
    }

    // The config: a directory mount (so reloads see atomic renames), holding
    // the file that the command names.
    let command = strings(seq_at(cutover, &["command"]));
    let config_path = config_arg(&command, "cutover service command");
    let volumes = strings(seq_at(cutover, &["volumes"]));
    let (source, file) = volumes
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            let file = config_path.strip_prefix(target)?.strip_prefix('/')?;
            Some((source, file))
        })
        .unwrap_or_else(|| panic!("docker/docker-compose.yml: no volume holds {config_path}: {volumes:?}"));
    let source = source.trim_start_matches("./");
    let config_file = root().join("docker").join(source).join(file);
    assert!(root().join("docker").join(source).is_dir(), "mount the config's directory, not the file: {source}");
    assert_eq!(display(&config_file), "docker/compose/cutover.toml");
    let config = config::load(&config_file).unwrap_or_else(|e| panic!("{e}"));

    // Ports: traffic published, admin only on the host's loopback.
    let ports = strings(seq_at(cutover, &["ports"]));
    let traffic = config.server.listen[0].port();
    let admin = config.admin.listen.port();
    assert!(
        ports.contains(&format!("{traffic}:{traffic}").as_str()),
        "traffic port {traffic} not published: {ports:?}"
    );
    assert!(
        ports.contains(&format!("127.0.0.1:{admin}:{admin}").as_str()),
        "admin port {admin} must be published on 127.0.0.1 only: {ports:?}"
    );
    assert!(config.admin.listen.ip().is_unspecified(), "in a container the admin API must listen on 0.0.0.0");

    // `docker compose stop` waits long enough for a graceful shutdown.
    let grace = str_at(cutover, &["stop_grace_period"], "cutover service");
    let grace = humantime::parse_duration(grace).unwrap_or_else(|e| panic!("stop_grace_period {grace:?}: {e}"));
    assert!(
        grace > shutdown_budget(&config),
        "stop_grace_period {grace:?} must exceed shutdown_delay + drain_timeout = {:?}",
        shutdown_budget(&config)
    );

    // Each backend is a Compose service, on the port it listens on.
    for pool in &config.pools {
        for backend in &pool.backends {
            let (host, port) = backend.authority.rsplit_once(':').expect("host:port");
            assert!(services.iter().any(|s| s == host), "pool {}: backend {host} is not a Compose service", pool.name);
            let args = strings(seq_at(&compose, &["services", host, "command"]));
            assert!(
                args.contains(&format!("-listen=:{port}").as_str()),
                "service {host} does not listen on {port}: {args:?}"
            );
        }
    }

    // The replicas are one fleet, on the etcd service, and the second one
    // runs the same image and config as the first.
    let fleet = config.fleet.as_ref().expect("docker/compose/cutover.toml: a [fleet] section");
    for endpoint in &fleet.endpoints {
        assert!(services.contains(&endpoint.host), "[fleet] etcd {} is not a Compose service", endpoint.host);
        let args = strings(seq_at(&compose, &["services", &endpoint.host, "command"]));
        assert!(
            args.iter().any(|a| *a == format!("--listen-client-urls=http://0.0.0.0:{}", endpoint.port)),
            "service {} does not listen for clients on {}: {args:?}",
            endpoint.host,
            endpoint.port
        );
    }
    let second = &compose["services"]["cutover-2"];
    assert_eq!(str_at(second, &["image"], "cutover-2"), str_at(cutover, &["image"], "cutover"), "one image");
    assert_eq!(strings(seq_at(second, &["command"])), command, "cutover-2 runs the same config");
    assert_eq!(strings(seq_at(second, &["volumes"])), volumes, "cutover-2 mounts the same config");
    assert!(
        strings(seq_at(second, &["ports"])).contains(&format!("127.0.0.1:{}:{admin}", admin + 1).as_str()),
        "cutover-2's admin port is published on 127.0.0.1 only"
    );

    // Prometheus scrapes the admin port and loads the mounted alert rules.
    let prometheus = yaml_doc("docker/compose/prometheus.yml");
    let targets: Vec<&str> = seq_at(&prometheus, &["scrape_configs"])
        .iter()
        .flat_map(|job| seq_at(job, &["static_configs"]))
        .flat_map(|sc| strings(seq_at(sc, &["targets"])))
        .collect();
    for replica in ["cutover", "cutover-2"] {
        assert!(
            targets.contains(&format!("{replica}:{admin}").as_str()),
            "Prometheus does not scrape {replica}:{admin}"
        );
    }
    let rules_mount = strings(seq_at(&compose, &["services", "prometheus", "volumes"]))
        .into_iter()
        .find(|v| v.starts_with("./prometheus/alerts.yml:"))
        .expect("the prometheus service mounts ./prometheus/alerts.yml");
    let rules_target = rules_mount.split(':').nth(1).expect("a mount target");
    let patterns = strings(seq_at(&prometheus, &["rule_files"]));
    assert!(
        patterns.iter().any(|p| glob_matches(p, rules_target)),
        "rule_files {patterns:?} do not load {rules_target}"
    );
}

/// A glob with at most one `*` (as rule_files use them).
fn glob_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => path.len() >= head.len() + tail.len() && path.starts_with(head) && path.ends_with(tail),
        None => pattern == path,
    }
}

/// A Kubernetes object of `kind` named `name` in `docs`.
fn k8s_object<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind) && at(d, &["metadata", "name"]).as_str() == Some(name))
}

/// The containerPort of the named port of `container`.
fn named_port(container: &Yaml, name: &str) -> Option<u16> {
    seq_at(container, &["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_i64())
        .and_then(|p| u16::try_from(p).ok())
}

/// Check a manifest's Deployment with a `cutover` container against the
/// cutover config in the ConfigMap it mounts; returns that config.
fn check_cutover_deployment(rel: &str, docs: &[Yaml], deployment: &Yaml) -> Config {
    let name = str_at(deployment, &["metadata", "name"], rel);
    let what = format!("{rel}: Deployment {name}");
    let pod = at(deployment, &["spec", "template", "spec"]);
    let container = seq_at(pod, &["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("cutover"))
        .unwrap_or_else(|| panic!("{what}: no container named cutover"));

    // The config: the ConfigMap mounted as a directory, the file --config names.
    let args = strings(seq_at(container, &["args"]));
    assert_eq!(args.first(), Some(&"run"), "{what}: args must start with run: {args:?}");
    let config_path = Path::new(config_arg(&args, &what));
    let config_dir = config_path.parent().and_then(Path::to_str).expect("a directory");
    let key = config_path.file_name().and_then(|f| f.to_str()).expect("a file name");
    let mount = seq_at(container, &["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(config_dir))
        .unwrap_or_else(|| panic!("{what}: nothing is mounted at {config_dir}"));
    assert!(mount["subPath"].is_badvalue(), "{what}: a subPath mount is never updated; mount the directory");
    let volume_name = str_at(mount, &["name"], &what);
    let volume = seq_at(pod, &["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .unwrap_or_else(|| panic!("{what}: no volume {volume_name}"));
    let config_map = str_at(volume, &["configMap", "name"], &format!("{what}: volume {volume_name}"));
    let config_map_name = config_map;
    let config_map =
        k8s_object(docs, "ConfigMap", config_map).unwrap_or_else(|| panic!("{rel}: no ConfigMap {config_map}"));
    let toml = str_at(config_map, &["data", key], &format!("{rel}: ConfigMap data"));
    // Errors point into the embedded file: name it so. (Its paths are
    // absolute, so the directory it would resolve relative ones against does
    // not matter.)
    let embedded = root().join(format!("{rel} (ConfigMap {config_map_name}, {key})"));
    let config = config::parse(&embedded, toml).unwrap_or_else(|e| panic!("{e}"));

    // Probes on the admin port: /ready for readiness, /healthz for liveness.
    assert_eq!(str_at(container, &["readinessProbe", "httpGet", "path"], &what), "/ready");
    assert_eq!(str_at(container, &["livenessProbe", "httpGet", "path"], &what), "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = str_at(container, &[probe, "httpGet", "port"], &what);
        assert_eq!(named_port(container, port), Some(config.admin.listen.port()), "{what}: {probe} port {port}");
    }
    assert!(config.admin.listen.ip().is_unspecified(), "{what}: the kubelet probes the pod IP; admin must be 0.0.0.0");
    assert!(config.admin.token_file.is_some(), "{what}: an admin API on 0.0.0.0 needs a token_file");
    assert_eq!(named_port(container, "http"), Some(config.server.listen[0].port()), "{what}: traffic port");

    // Graceful shutdown: cutover's shutdown_delay, not a preStop sleep, and
    // time enough for it before SIGKILL.
    assert!(at(container, &["lifecycle", "preStop"]).is_badvalue(), "{what}: no preStop hook; shutdown_delay does it");
    let grace = at(pod, &["terminationGracePeriodSeconds"])
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: no terminationGracePeriodSeconds (the default 30s is too short)"));
    let grace = Duration::from_secs(u64::try_from(grace).expect("a positive grace period"));
    assert!(
        grace > shutdown_budget(&config),
        "{what}: terminationGracePeriodSeconds {grace:?} must exceed shutdown_delay + drain_timeout = {:?}",
        shutdown_budget(&config)
    );

    // The image's user.
    assert_eq!(at(container, &["securityContext", "runAsUser"]).as_i64(), Some(10001), "{what}: runAsUser");
    config
}

/// The Deployments of `docs` that run cutover.
fn cutover_deployments(docs: &[Yaml]) -> Vec<&Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .filter(|d| {
            seq_at(d, &["spec", "template", "spec", "containers"]).iter().any(|c| c["name"].as_str() == Some("cutover"))
        })
        .collect()
}

/// A Service whose selector picks `labels`, and which sends to the named
/// port `target`.
fn service_for<'a>(docs: &'a [Yaml], labels: &Yaml, target: &str) -> Option<&'a Yaml> {
    docs.iter().filter(|d| d["kind"].as_str() == Some("Service")).find(|svc| {
        let selector = at(svc, &["spec", "selector"]);
        let selects = selector.as_hash().is_some_and(|h| h.iter().all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v));
        selects && seq_at(svc, &["spec", "ports"]).iter().any(|p| p["targetPort"].as_str() == Some(target))
    })
}

#[test]
fn kubernetes_sidecar_probes_ready_and_outlasts_the_graceful_shutdown() {
    let rel = "docker/k8s/sidecar.yaml";
    let docs = yaml_docs(rel);
    let deployments = cutover_deployments(&docs);
    assert_eq!(deployments.len(), 1, "{rel}: expected one Deployment with a cutover container");
    let config = check_cutover_deployment(rel, &docs, deployments[0]);

    // The app sits next to cutover, on loopback as far as cutover knows.
    let local: Vec<&str> = config
        .pools
        .iter()
        .flat_map(|p| &p.backends)
        .map(|b| b.authority.as_str())
        .filter(|a| a.starts_with("127.0.0.1:"))
        .collect();
    assert!(!local.is_empty(), "{rel}: no pool forwards to the app on 127.0.0.1");
    let app_ports: Vec<u16> = seq_at(deployments[0], &["spec", "template", "spec", "containers"])
        .iter()
        .filter(|c| c["name"].as_str() != Some("cutover"))
        .flat_map(|c| seq_at(c, &["ports"]))
        .filter_map(|p| p["containerPort"].as_i64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    for backend in local {
        let port: u16 = backend.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port");
        assert!(
            app_ports.contains(&port),
            "{rel}: backend {backend} is not a port of the app container ({app_ports:?})"
        );
    }
    let labels = at(deployments[0], &["spec", "template", "metadata", "labels"]);
    assert!(service_for(&docs, labels, "http").is_some(), "{rel}: no Service sends to cutover's http port");
}

#[test]
fn kubernetes_edge_runs_three_replicas_as_one_fleet_with_a_disruption_budget() {
    let rel = "docker/k8s/edge.yaml";
    let docs = yaml_docs(rel);
    let deployments = cutover_deployments(&docs);
    assert_eq!(deployments.len(), 1, "{rel}: expected one Deployment with a cutover container");
    let deployment = deployments[0];
    let config = check_cutover_deployment(rel, &docs, deployment);
    assert!(at(deployment, &["spec", "replicas"]).as_i64().is_some_and(|r| r >= 3), "{rel}: at least 3 replicas");

    // One fleet, on the members of docker/k8s/etcd.yaml's StatefulSet.
    let fleet = config.fleet.as_ref().unwrap_or_else(|| panic!("{rel}: no [fleet] section"));
    let etcd_rel = "docker/k8s/etcd.yaml";
    let etcd_docs = yaml_docs(etcd_rel);
    let members = k8s_object(&etcd_docs, "StatefulSet", "cutover-etcd")
        .unwrap_or_else(|| panic!("{etcd_rel}: no StatefulSet cutover-etcd"));
    let service = str_at(members, &["spec", "serviceName"], etcd_rel);
    let count = at(members, &["spec", "replicas"]).as_i64().expect("etcd replicas");
    assert!(count >= 3 && count % 2 == 1, "{etcd_rel}: an odd number of members, at least 3");
    let headless =
        k8s_object(&etcd_docs, "Service", service).unwrap_or_else(|| panic!("{etcd_rel}: no Service {service}"));
    assert_eq!(
        at(headless, &["spec", "clusterIP"]).as_str(),
        Some("None"),
        "{etcd_rel}: the members' Service is headless"
    );
    assert_eq!(
        at(headless, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true),
        "{etcd_rel}: members find each other before they are ready"
    );
    let expected: Vec<String> = (0..count).map(|i| format!("cutover-etcd-{i}.{service}")).collect();
    let hosts: Vec<String> = fleet.endpoints.iter().map(|e| e.host.clone()).collect();
    assert_eq!(hosts, expected, "{rel}: [fleet] etcd lists every member");
    let etcd = seq_at(members, &["spec", "template", "spec", "containers"]).first().expect("an etcd container");
    for endpoint in &fleet.endpoints {
        assert_eq!(Some(endpoint.port), named_port(etcd, "client"), "{rel}: etcd's client port");
    }

    let labels = at(deployment, &["spec", "template", "metadata", "labels"]);
    let pdb = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("PodDisruptionBudget"))
        .unwrap_or_else(|| panic!("{rel}: no PodDisruptionBudget"));
    let selector = at(pdb, &["spec", "selector", "matchLabels"]).as_hash().expect("PDB matchLabels");
    assert!(
        selector.iter().all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v),
        "{rel}: the PDB does not select cutover"
    );
    assert!(service_for(&docs, labels, "http").is_some(), "{rel}: no Service sends to cutover's http port");

    let container = seq_at(deployment, &["spec", "template", "spec", "containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("cutover"))
        .expect("checked above");
    for kind in ["requests", "limits"] {
        assert!(at(container, &["resources", kind]).is_hash(), "{rel}: cutover has no resources.{kind}");
    }

    // The backends are the Services of the versions, by cluster DNS name.
    for name in ["blue", "green", "canary"] {
        let pool = config.pool(name).unwrap_or_else(|| panic!("{rel}: no pool {name}"));
        assert!(
            pool.backends.iter().any(|b| b.authority.starts_with(&format!("{name}.default.svc.cluster.local:"))),
            "{rel}: pool {name} does not point at the {name} Service"
        );
    }
}

// ---- (c) metric names -----------------------------------------------------

/// The metric names of `src/metrics.rs`: every `"cutover_..."` literal, and
/// which of them are histograms.
fn declared_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read("src/metrics.rs");
    let literal_after = |at: usize| -> Option<String> {
        let rest = &text[at..];
        let start = rest.find('"')? + 1;
        let len = rest[start..].find('"')?;
        Some(rest[start..start + len].to_string())
    };
    let names: BTreeSet<String> = text
        .match_indices("\"cutover_")
        .filter_map(|(at, _)| literal_after(at))
        .filter(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        .collect();
    let histograms: BTreeSet<String> =
        text.match_indices("HistogramOpts::new(").filter_map(|(at, _)| literal_after(at)).collect();
    assert!(names.len() >= 13, "src/metrics.rs declares only {names:?}: is the scan broken?");
    assert!(!histograms.is_empty() && histograms.is_subset(&names), "histograms {histograms:?} not among {names:?}");
    (names, histograms)
}

/// Every `cutover_...` identifier in a PromQL expression.
fn metric_names_in(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    expr.match_indices("cutover_")
        .filter(|(at, _)| *at == 0 || !word(bytes[at - 1]))
        .map(|(at, _)| {
            let len =
                expr[at..].bytes().take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_').count();
            expr[at..at + len].to_string()
        })
        .collect()
}

/// The declared metric `name` refers to: itself, or a histogram's series.
fn declared_base<'a>(name: &'a str, declared: &(BTreeSet<String>, BTreeSet<String>)) -> Option<&'a str> {
    if declared.0.contains(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| declared.1.contains(*base))
}

/// Every string under a key in `keys`, anywhere in `value`.
fn json_strings_under(value: &serde_json::Value, keys: &[&str], out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if keys.contains(&k.as_str()) => out.push(s.clone()),
                    _ => json_strings_under(v, keys, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings_under(v, keys, out)),
        _ => {}
    }
}

#[test]
fn the_metric_name_scan_finds_unknown_names() {
    let declared = declared_metrics();
    assert_eq!(
        metric_names_in("sum(rate(cutover_requests_total{code=\"5xx\"}[5m])) / x_cutover_y + cutover_bogus_total"),
        ["cutover_requests_total", "cutover_bogus_total"]
    );
    assert_eq!(
        declared_base("cutover_request_duration_seconds_bucket", &declared),
        Some("cutover_request_duration_seconds")
    );
    assert_eq!(declared_base("cutover_requests_total_bucket", &declared), None, "only histograms have buckets");
    assert_eq!(declared_base("cutover_bogus_total", &declared), None);
}

#[test]
fn dashboard_queries_only_declared_metrics_and_shows_every_one() {
    let rel = "docker/grafana/cutover-dashboard.json";
    let dashboard: serde_json::Value = serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!((36..=41).contains(&schema), "{rel}: schemaVersion {schema}");
    let panels = dashboard["panels"].as_array().unwrap_or_else(|| panic!("{rel}: no panels"));
    let ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    let unique: BTreeSet<&u64> = ids.iter().collect();
    assert_eq!(unique.len(), panels.len(), "{rel}: every panel needs a unique id");

    let declared = declared_metrics();
    let mut exprs = Vec::new();
    json_strings_under(&dashboard, &["expr"], &mut exprs);
    assert!(exprs.len() >= 13, "{rel}: only {} queries", exprs.len());
    // Template variables query metrics too.
    let mut queries = exprs.clone();
    json_strings_under(&dashboard["templating"], &["query", "definition"], &mut queries);
    let mut used = BTreeSet::new();
    for expr in &queries {
        for name in metric_names_in(expr) {
            let base = declared_base(&name, &declared)
                .unwrap_or_else(|| panic!("{rel}: {name} is not a metric of src/metrics.rs, in: {expr}"));
            used.insert(base.to_string());
        }
    }
    let missing: Vec<&String> = declared.0.difference(&used).collect();
    assert!(missing.is_empty(), "{rel}: no panel shows {missing:?}");
}

#[test]
fn alert_rules_query_only_declared_metrics() {
    let rel = "docker/prometheus/alerts.yml";
    let rules = yaml_doc(rel);
    let declared = declared_metrics();
    let mut names = BTreeSet::new();
    let mut used = BTreeSet::new();
    let groups = seq_at(&rules, &["groups"]);
    assert!(!groups.is_empty(), "{rel}: no groups");
    for group in groups {
        for rule in seq_at(group, &["rules"]) {
            let alert = str_at(rule, &["alert"], rel);
            let what = format!("{rel}: alert {alert}");
            assert!(names.insert(alert.to_string()), "{what} is defined twice");
            let expr = str_at(rule, &["expr"], &what);
            let holds = str_at(rule, &["for"], &what);
            assert!(humantime::parse_duration(holds).is_ok(), "{what}: `for: {holds}` is not a duration");
            let severity = str_at(rule, &["labels", "severity"], &what);
            assert!(["critical", "warning", "info"].contains(&severity), "{what}: severity {severity}");
            for key in ["summary", "description"] {
                assert!(!str_at(rule, &["annotations", key], &what).trim().is_empty(), "{what}: empty {key}");
            }
            for name in metric_names_in(expr) {
                let base = declared_base(&name, &declared)
                    .unwrap_or_else(|| panic!("{what}: {name} is not a metric of src/metrics.rs"));
                used.insert(base.to_string());
            }
        }
    }
    for metric in [
        "cutover_pool_tripped",
        "cutover_rollbacks_total",
        "cutover_guard_breaches_total",
        "cutover_config_reloads_total",
        "cutover_requests_total",
        "cutover_backend_healthy",
        "cutover_drain_cut_requests_total",
        "cutover_client_timeouts_total",
    ] {
        assert!(used.contains(metric), "{rel}: no alert on {metric}");
    }
}

/// Where promtool is, if it is installed: `PROMTOOL`, or on the `PATH`.
fn promtool() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|p| p.is_file())
}

/// `rules` without the alerts' annotations. promtool's unit tests compare
/// annotations as well as labels, and the tests are about when an alert
/// fires: repeating every description there would only make them brittle.
fn without_annotations(rules: &Yaml) -> String {
    let mut rules = rules.clone();
    if let Yaml::Hash(top) = &mut rules {
        if let Some(Yaml::Array(groups)) = top.get_mut(&Yaml::String("groups".into())) {
            for group in groups {
                let Yaml::Hash(group) = group else { continue };
                let Some(Yaml::Array(group_rules)) = group.get_mut(&Yaml::String("rules".into())) else { continue };
                for rule in group_rules {
                    if let Yaml::Hash(rule) = rule {
                        rule.remove(&Yaml::String("annotations".into()));
                    }
                }
            }
        }
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out).dump(&rules).expect("the rules can be written back as YAML");
    out
}

/// Each alert fires on what should fire it, and not on the near miss beside
/// it (a series created at 0 by a restart, a draining backend, a pool at
/// weight 0, `no_request` timeouts): the cases in
/// `docker/prometheus/alerts.test.yml`, run by promtool. Every alert must
/// have a case in which it fires. promtool comes from Debian's `prometheus`
/// package, which `.ci/run` installs; where it is missing, the coverage
/// check still runs and the promtool run is skipped with a note, unless
/// `CUTOVER_REQUIRE_PROMTOOL` is set, as `.ci/run` sets it.
#[test]
fn alert_rules_fire_when_they_should_and_only_then() {
    let rules_rel = "docker/prometheus/alerts.yml";
    let tests_rel = "docker/prometheus/alerts.test.yml";
    let rules = yaml_doc(rules_rel);
    let tests = yaml_doc(tests_rel);

    let alerts: BTreeSet<&str> = seq_at(&rules, &["groups"])
        .iter()
        .flat_map(|group| seq_at(group, &["rules"]))
        .map(|rule| str_at(rule, &["alert"], rules_rel))
        .collect();
    let mut fired = BTreeSet::new();
    for case in seq_at(&tests, &["tests"]) {
        for check in seq_at(case, &["alert_rule_test"]) {
            let alert = str_at(check, &["alertname"], tests_rel);
            assert!(alerts.contains(alert), "{tests_rel}: tests {alert}, which {rules_rel} does not define");
            if !seq_at(check, &["exp_alerts"]).is_empty() {
                fired.insert(alert);
            }
        }
    }
    let untested: Vec<&&str> = alerts.difference(&fired).collect();
    assert!(untested.is_empty(), "{tests_rel}: no case in which {untested:?} fires");

    let Some(promtool) = promtool() else {
        assert!(
            std::env::var_os("CUTOVER_REQUIRE_PROMTOOL").is_none(),
            "CUTOVER_REQUIRE_PROMTOOL is set, but promtool is neither in PROMTOOL nor on the PATH"
        );
        eprintln!("note: promtool is not installed, so {tests_rel} was not run (apt-get install prometheus)");
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("alerts.yml"), without_annotations(&rules)).expect("write the rules");
    std::fs::write(dir.path().join("alerts.test.yml"), read(tests_rel)).expect("write the tests");
    let out = Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool test rules {tests_rel} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- (d) Dockerfile -------------------------------------------------------

/// The Dockerfile's instructions: (keyword, arguments), continuation lines
/// joined, comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("docker/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((current.as_str(), ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The `["a", "b"]` (exec form) arguments of an instruction.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("docker/Dockerfile: {args} is not in exec form: {e}"))
}

/// (major, minor) of a `1.85`-style version.
fn minor_version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("bad version {v:?}")));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn dockerfile_has_healthcheck_user_ports_and_the_default_config() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| -> Vec<&str> {
        instructions.iter().filter(|(k, _)| k == keyword).map(|(_, a)| a.as_str()).collect()
    };
    let one = |keyword: &str| -> &str {
        let found = all(keyword);
        assert!(!found.is_empty(), "docker/Dockerfile: no {keyword}");
        found[found.len() - 1]
    };

    // Build and runtime bases.
    let from = all("FROM");
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(from[0].starts_with("rust:") && from[0].contains("-bookworm"), "build stage: {}", from[0]);
    assert_eq!(from[1], "debian:bookworm-slim");
    let rust = all("ARG")
        .into_iter()
        .find_map(|a| a.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION=... with a default");
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml parses");
    let msrv = manifest["package"]["rust-version"].as_str().expect("Cargo.toml has a rust-version");
    assert!(minor_version(rust) >= minor_version(msrv), "Rust {rust} in the image is older than rust-version {msrv}");
    assert!(all("RUN").iter().any(|r| r.contains("cargo build --release --locked")), "build with --locked, as CI does");
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("scripts/pgo-build.sh") && r.contains("cp target/pgo/cutover target/release/cutover")),
        "the image ships the profile-guided build"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("install") && r.contains("valgrind") && r.contains("scripts/pgo-build.sh")),
        "the PGO build installs valgrind, without which it skips the code layout (about 1.5 MiB more idle RSS)"
    );
    let pgo_script = root().join("scripts/pgo-build.sh");
    let mode = std::fs::metadata(&pgo_script).expect("scripts/pgo-build.sh exists").permissions();
    assert!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o111 != 0, "scripts/pgo-build.sh is not executable");
    assert!(all("RUN").iter().any(|r| r.contains("ca-certificates")), "rustls-native-certs needs the system roots");

    // Health check, user, ports, signal.
    let healthcheck = one("HEALTHCHECK");
    assert!(healthcheck.contains("CMD"), "HEALTHCHECK without CMD: {healthcheck}");
    let user = one("USER");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as root: USER {user}");
    assert!(user.starts_with("10001"), "USER {user}; the Kubernetes examples expect uid 10001");
    let exposed: Vec<&str> = all("EXPOSE").iter().flat_map(|e| e.split_whitespace()).collect();
    assert!(exposed.contains(&"8080") && exposed.contains(&"9901"), "EXPOSE {exposed:?}");
    assert_eq!(one("STOPSIGNAL"), "SIGTERM");

    // COPY: sources exist and pass the ignore file; destinations by source.
    let ignore = read("docker/Dockerfile.dockerignore");
    let allowed: Vec<&str> = ignore.lines().filter_map(|l| l.trim().strip_prefix('!')).collect();
    let mut copied: BTreeMap<String, String> = BTreeMap::new();
    for copy in all("COPY") {
        let words: Vec<&str> = copy.split_whitespace().filter(|w| !w.starts_with("--chmod")).collect();
        if words.iter().any(|w| w.starts_with("--from")) {
            let words: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
            copied.insert(words[0].to_string(), words[words.len() - 1].to_string());
            continue;
        }
        let (dest, sources) = words.split_last().expect("COPY has a destination");
        for source in sources {
            assert!(root().join(source).exists(), "docker/Dockerfile copies {source}, which is missing");
            assert!(
                allowed.iter().any(|a| source == a || source.starts_with(&format!("{a}/"))),
                "docker/Dockerfile copies {source}, which docker/Dockerfile.dockerignore leaves out"
            );
            copied.insert(source.to_string(), dest.to_string());
        }
    }
    assert_eq!(
        copied.get("/src/target/release/cutover").map(String::as_str),
        Some("/usr/local/bin/cutover"),
        "the binary goes to /usr/local/bin/cutover: {copied:?}"
    );
    let probe = copied.get("docker/healthcheck.sh").expect("the health-check script is copied");
    assert!(healthcheck.contains(probe.as_str()), "HEALTHCHECK does not run {probe}: {healthcheck}");
    assert!(read("docker/healthcheck.sh").contains("200"), "the health check must check for a 200");

    // ENTRYPOINT and CMD: `cutover run --config X`, X the image's default config.
    assert_eq!(exec_form(one("ENTRYPOINT")), ["cutover"]);
    let cmd = exec_form(one("CMD"));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_eq!(cmd.first(), Some(&"run"), "CMD {cmd:?}");
    let config_path = config_arg(&cmd, "docker/Dockerfile CMD");
    assert_eq!(config_path, "/etc/cutover/cutover.toml");
    assert_eq!(
        copied.get("docker/cutover.toml").map(String::as_str),
        Some(config_path),
        "CMD reads {config_path}, but docker/cutover.toml is not copied there: {copied:?}"
    );

    // The default config serves on the exposed ports, admin on 0.0.0.0.
    let config = config::load(&root().join("docker/cutover.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.server.listen.iter().all(|a| exposed.contains(&a.port().to_string().as_str())));
    assert!(exposed.contains(&config.admin.listen.port().to_string().as_str()));
    assert!(config.admin.listen.ip().is_unspecified(), "docker/cutover.toml: admin must listen on 0.0.0.0");
}

// ---- (e) the binary with the image's default config -------------------------

#[test]
fn binary_accepts_the_image_default_config() {
    let path = root().join("docker/cutover.toml");
    let out = cutover().arg("check").arg(&path).output().expect("start cutover check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok"), "{stdout}");
}

/// `text` with `listen` in `[server]` and `[admin]` replaced.
fn with_listeners(text: &str, traffic: SocketAddr, admin: SocketAddr) -> String {
    let mut section = String::new();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed.split(']').next().unwrap_or_default().trim_start_matches('[').to_string();
        }
        let key = trimmed.split('=').next().unwrap_or_default().trim();
        match (section.as_str(), key) {
            ("server", "listen") => out.push_str(&format!("listen = [\"{traffic}\"]\n")),
            ("admin", "listen") => out.push_str(&format!("listen = \"{admin}\"\n")),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The status code of `GET path` on `addr`, with the shared raw client.
fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let out = runtime.block_on(support::exchange(addr, request.as_bytes()));
    out.only().status
}

/// Exit code of the image's health-check script against `admin`.
fn healthcheck(admin: SocketAddr, path: &str) -> Option<i32> {
    Command::new("bash")
        .arg(root().join("docker/healthcheck.sh"))
        .arg(path)
        .env("CUTOVER_ADMIN_HOST", admin.ip().to_string())
        .env("CUTOVER_ADMIN_PORT", admin.port().to_string())
        .stderr(Stdio::null())
        .status()
        .expect("run docker/healthcheck.sh with bash")
        .code()
}

#[test]
fn binary_serves_healthz_with_the_image_default_config_and_stops_on_sigterm() {
    let original_text = read("docker/cutover.toml");
    let original = config::parse(Path::new("docker/cutover.toml"), &original_text).unwrap_or_else(|e| panic!("{e}"));
    // Both listeners on port 0: the binary logs the ports it got.
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover.toml");
    let text = with_listeners(&original_text, any_port, any_port);
    std::fs::write(&path, &text).unwrap();

    // The copy differs from the image's config in its listeners only.
    let copy = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut expected = original.clone();
    expected.server.listen = vec![any_port];
    expected.admin.listen = any_port;
    assert_eq!(copy, expected, "the rewrite changed more than the listeners:\n{text}");
    assert!(original.server.shutdown_delay > Duration::ZERO, "the image's config should have a shutdown_delay");

    let mut running = Running::start(&path, &[]);
    let traffic = SocketAddr::from(([127, 0, 0, 1], running.wait_for_port("serving traffic")));
    let admin = SocketAddr::from(([127, 0, 0, 1], running.wait_for_port("serving admin API")));
    assert_eq!(get_status(admin, "/healthz"), 200);
    assert_eq!(get_status(admin, "/ready"), 200);
    assert_eq!(healthcheck(admin, "/healthz"), Some(0), "the image's HEALTHCHECK against a live proxy");
    // Nothing answers on the traffic port's backends (`blue:8080`), but the
    // proxy itself is up there.
    assert!(TcpStream::connect(traffic).is_ok(), "traffic listener on {traffic}");

    running.sigterm();
    running.wait_for_log("shutting down");
    // During shutdown_delay: not ready, still alive.
    let end = Instant::now() + DEADLINE;
    while get_status(admin, "/ready") != 503 {
        assert!(Instant::now() < end, "/ready did not turn 503 after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_status(admin, "/healthz"), 200, "/healthz stays 200 while draining");
    assert_eq!(healthcheck(admin, "/ready"), Some(1), "the health-check script fails on a 503");

    let status = running.wait_exit();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM; stderr:\n{}", running.lines.join("\n"));
    assert!(running.lines.iter().any(|l| l.contains("shutdown complete")), "{}", running.lines.join("\n"));
}
