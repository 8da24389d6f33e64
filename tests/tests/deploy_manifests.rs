//! Every manifest under `deploy/` and `examples/` parses into its
//! k8s-openapi type (or tortie's CRD types) with no field left over, so a
//! typo (`hostNetwrok: true`, `readinesProbe:`) fails CI instead of being
//! dropped silently by `kubectl apply`; `deploy/kustomization.yaml` lists
//! files that exist; `deploy/crds.yaml` is exactly what `tortie crds`
//! prints; and the DaemonSet and RBAC say what the agent needs.
//!
//! No kubectl or kustomize is installed here, so this is the validation.
//! Regenerate the CRDs with `BLESS=1 cargo test -p tortie-integration
//! --test deploy_manifests` (or `tortie crds > deploy/crds.yaml`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, Pod, ResourceQuota, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tortie::datastore::kube::Kind;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Documents of a file as JSON values (blank documents skipped).
fn documents(path: &Path) -> Vec<(usize, Value)> {
    let text = std::fs::read_to_string(path).expect("read");
    tortie::manifests::split_documents(&text)
        .into_iter()
        .map(|(i, doc)| {
            let v: Value = serde_norway::from_str(&doc)
                .unwrap_or_else(|e| panic!("{} document {i}: not YAML: {e}", path.display()));
            (i, v)
        })
        .filter(|(_, v)| !v.is_null())
        .collect()
}

/// Every field of `original` is in `round_trip` with the same value: what
/// serde dropped as unknown shows up as the first missing path.
fn missing_field(original: &Value, round_trip: &Value, path: &str) -> Option<String> {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match b.get(k) {
                Some(w) => missing_field(v, w, &here),
                None if v.is_null() => None,
                None => Some(format!("{here} (unknown field)")),
            }
        }),
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path} (list length changed)"));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (v, w))| missing_field(v, w, &format!("{path}[{i}]")))
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path} ({a} became {b})")),
    }
}

fn strict<T: DeserializeOwned + Serialize>(v: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match missing_field(v, &back, "") {
        Some(field) => Err(format!("field {field} is not part of the type")),
        None => Ok(typed),
    }
}

/// Checks one Kubernetes object against its type; the error names the field.
fn check_object(v: &Value) -> Result<(), String> {
    let api_version = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    if v["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err("metadata.name is missing".into());
    }
    match (api_version, kind) {
        ("v1", "Namespace") => strict::<Namespace>(v).map(drop),
        ("v1", "ResourceQuota") => strict::<ResourceQuota>(v).map(drop),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(v).map(drop),
        ("v1", "ConfigMap") => strict::<ConfigMap>(v).map(drop),
        ("v1", "Secret") => strict::<Secret>(v).map(drop),
        ("v1", "Pod") => strict::<Pod>(v).map(drop),
        ("v1", "Node") => strict::<Node>(v).map(drop),
        ("networking.k8s.io/v1", "NetworkPolicy") => strict::<NetworkPolicy>(v).map(drop),
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(v).map(drop)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(v).map(drop),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(v).map(drop)
        }
        ("tortie.io/v1alpha1", "BGPConfiguration") => {
            strict::<tortie::crd::BGPConfiguration>(v).map(drop)
        }
        ("tortie.io/v1alpha1", "BGPPeer") => strict::<tortie::crd::BGPPeer>(v).map(drop),
        ("tortie.io/v1alpha1", "IPPool") => strict::<tortie::crd::IPPool>(v).map(drop),
        _ => Err(format!(
            "{api_version} {kind} is not a kind this test knows (a typo? else add it here)"
        )),
    }
}

/// Placeholder templates (`@NAME@`, filled in by the interop tests) and
/// speaker configs are not Kubernetes objects.
fn is_template(text: &str) -> bool {
    text.split('@').skip(1).step_by(2).any(|w| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
    })
}

#[test]
fn every_manifest_in_deploy_and_examples_parses_with_no_unknown_field() {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy"), &mut files);
    yaml_files(&repo().join("examples"), &mut files);
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let shown = file
            .strip_prefix(repo())
            .unwrap_or(file)
            .display()
            .to_string();
        if shown.ends_with("kustomization.yaml") {
            continue; // kustomization_lists_files_that_exist
        }
        if is_template(&text) {
            eprintln!("{shown}: template with @PLACEHOLDERS@, skipped");
            continue;
        }
        for (i, doc) in documents(file) {
            if doc.get("apiVersion").is_none() && doc.get("kind").is_none() {
                // Not a Kubernetes object: a `tortie bgp --config` file is
                // checked as one; other formats belong to their own tests.
                if doc.get("routerId").is_some() && doc.get("asNumber").is_some() {
                    if let Err(e) =
                        serde_json::from_value::<tortie::resources::SpeakerConfigSpec>(doc)
                    {
                        failures.push(format!("{shown} document {i} (speaker config): {e}"));
                    }
                    checked += 1;
                } else {
                    eprintln!("{shown} document {i}: not a Kubernetes object, skipped");
                }
                continue;
            }
            let name = format!(
                "{} {}",
                doc["kind"].as_str().unwrap_or("?"),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            if let Err(e) = check_object(&doc) {
                failures.push(format!("{shown} document {i} ({name}): {e}"));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "invalid manifests:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 20, "only {checked} documents checked");
}

#[test]
fn the_strict_check_catches_a_typo() {
    let ds: Value = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"hostNetwrok": true, "containers": []}}}
    });
    let err = check_object(&ds).expect_err("typo must fail");
    assert!(err.contains(".spec.template.spec.hostNetwrok"), "{err}");
    let peer: Value = serde_json::json!({
        "apiVersion": "tortie.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "x"},
        "spec": {"peerIP": "192.0.2.1", "asNumber": 65001, "holdtime": 9}
    });
    assert!(check_object(&peer).is_err());
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KustomizeImage {
    name: String,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_tag: Option<String>,
}

#[test]
fn kustomization_lists_files_that_exist_and_every_deploy_manifest() {
    let deploy = repo().join("deploy");
    let text = std::fs::read_to_string(deploy.join("kustomization.yaml")).expect("read");
    let k: Kustomization = serde_norway::from_str(&text).expect("kustomization.yaml");
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    for r in &k.resources {
        assert!(
            deploy.join(r).is_file(),
            "kustomization lists {r}, which does not exist"
        );
    }
    // Every top-level manifest is installed (examples/ is applied by hand).
    let listed: BTreeSet<&str> = k.resources.iter().map(String::as_str).collect();
    for entry in std::fs::read_dir(&deploy).expect("deploy/") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(name.as_str()),
                "deploy/{name} is not in kustomization.yaml"
            );
        }
    }
    // The image the DaemonSet uses is the one the kustomization pins.
    let ds: DaemonSet = one(&deploy.join("daemonset.yaml"), "DaemonSet");
    let images: BTreeSet<String> = pod_spec(&ds)
        .containers
        .iter()
        .chain(pod_spec(&ds).init_containers.iter().flatten())
        .filter_map(|c| c.image.clone())
        .collect();
    for image in images {
        let base = image.split(':').next().unwrap_or_default();
        let pinned = k
            .images
            .iter()
            .find(|i| i.name == base)
            .expect("image pinned in kustomization");
        assert!(pinned.new_tag.is_some() || pinned.new_name.is_some());
    }
}

#[test]
fn deploy_crds_are_exactly_what_tortie_crds_prints() {
    let path = repo().join("deploy/crds.yaml");
    let expected = tortie::crd::crds_yaml();
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &expected).expect("write deploy/crds.yaml");
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "deploy/crds.yaml differs from `tortie crds`; regenerate with `tortie crds > deploy/crds.yaml` \
         or BLESS=1 cargo test -p tortie-integration --test deploy_manifests"
    );
    // And the binary prints the same, when one was built for the test.
    if let Some(bin) = std::env::var_os("TORTIE_BIN") {
        let out = std::process::Command::new(bin)
            .arg("crds")
            .output()
            .expect("run tortie crds");
        assert!(
            out.status.success(),
            "tortie crds failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}

fn one<T: DeserializeOwned + Serialize>(path: &Path, kind: &str) -> T {
    let docs: Vec<Value> = documents(path)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "{}: one {kind}", path.display());
    strict(&docs[0]).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all<T: DeserializeOwned + Serialize>(path: &Path, kind: &str) -> Vec<T> {
    documents(path)
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == kind)
        .map(|v| strict(&v).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn pod_spec(ds: &DaemonSet) -> &k8s_openapi::api::core::v1::PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

#[test]
fn the_daemonset_runs_on_every_node_with_only_the_capabilities_it_needs() {
    let deploy = repo().join("deploy");
    let ds: DaemonSet = one(&deploy.join("daemonset.yaml"), "DaemonSet");
    let spec = ds.spec.as_ref().expect("spec");
    let pod = pod_spec(&ds);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(pod
        .tolerations
        .iter()
        .flatten()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));
    let update = spec.update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        update
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert!(pod.termination_grace_period_seconds.is_some());

    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "tortie")
        .expect("agent container");
    let sc = agent.security_context.as_ref().expect("securityContext");
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]),
        "each capability is justified in daemonset.yaml; change both together"
    );
    let args = agent
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        args.contains("--datastore=kubernetes") && args.contains("--node-name=$(NODE_NAME)"),
        "{args}"
    );
    for (probe, path) in [
        (&agent.liveness_probe, "/healthz"),
        (&agent.readiness_probe, "/readyz"),
    ] {
        let http = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet probe");
        assert_eq!(http.path.as_deref(), Some(path));
        assert!(
            args.contains(&format!(
                "--metrics-addr=127.0.0.1:{}",
                match &http.port {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) =>
                        p.to_string(),
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) =>
                        s.clone(),
                }
            )),
            "{path} probes the metrics port"
        );
    }

    // Host paths, and which are mounted read-only.
    let volumes = pod.volumes.iter().flatten();
    let host_paths: BTreeSet<String> = volumes
        .clone()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    for p in [
        "/run/tortie",
        "/var/lib/tortie",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/run/xtables.lock",
        "/lib/modules",
    ] {
        assert!(host_paths.contains(p), "host path {p}");
    }
    let lib_modules = volumes
        .clone()
        .find(|v| {
            v.host_path
                .as_ref()
                .is_some_and(|h| h.path == "/lib/modules")
        })
        .expect("lib-modules");
    let mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == lib_modules.name)
        .expect("lib-modules mounted");
    assert_eq!(mount.read_only, Some(true));

    // The init container installs the plugin and its conflist, and the
    // conflist is DESIGN.md's plugin entry.
    let init = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "install-cni")
        .expect("install-cni");
    let script = init
        .command
        .iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        script.contains("/host/opt/cni/bin/tortie-cni")
            && script.contains("/host/etc/cni/net.d/10-tortie.conflist"),
        "{script}"
    );
    let cm: ConfigMap = one(&deploy.join("cni-config.yaml"), "ConfigMap");
    let conflist: Value = serde_json::from_str(
        cm.data
            .as_ref()
            .and_then(|d| d.get("10-tortie.conflist"))
            .expect("conflist"),
    )
    .expect("conflist is JSON");
    assert_eq!(conflist["cniVersion"], "1.0.0");
    assert_eq!(
        conflist["plugins"][0],
        serde_json::json!({"type": "tortie-cni", "agentSocket": "/run/tortie/agent.sock"})
    );
    let cm_volume = volumes
        .clone()
        .find(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == cm.metadata.name.clone().unwrap_or_default())
        })
        .expect("the init container mounts the CNI ConfigMap");
    assert!(init
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == cm_volume.name));
}

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn rbac_grants_what_the_kubernetes_datastore_watches_and_writes_and_no_more() {
    let deploy = repo().join("deploy");
    let rbac = deploy.join("rbac.yaml");
    let cluster: ClusterRole = one(&rbac, "ClusterRole");
    let rules = cluster.rules.clone().unwrap_or_default();
    let roles: Vec<Role> = all(&rbac, "Role");
    let secrets_role = roles
        .iter()
        .find(|r| r.metadata.namespace.as_deref() == Some("tortie-system"))
        .expect("Role in tortie-system");
    let secret_rules = secrets_role.rules.clone().unwrap_or_default();
    for kind in Kind::ALL {
        let group = match kind {
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::BGPConfiguration | Kind::BGPPeer | Kind::IPPool => "tortie.io",
            _ => "",
        };
        let rules = if kind == Kind::Secret {
            &secret_rules
        } else {
            &rules
        };
        for verb in ["list", "watch"] {
            assert!(
                allows(rules, group, kind.plural(), verb),
                "{verb} {}",
                kind.plural()
            );
        }
    }
    assert!(
        !allows(&rules, "", "secrets", "list"),
        "no cluster-wide Secret access"
    );
    assert!(allows(&rules, "", "nodes/status", "patch"));
    assert!(allows(&rules, "events.k8s.io", "events", "create"));
    // Writes only where the agent writes.
    for r in &rules {
        let writes: Vec<&String> = r
            .verbs
            .iter()
            .filter(|v| !["get", "list", "watch"].contains(&v.as_str()))
            .collect();
        if !writes.is_empty() {
            let resources: Vec<&String> = r.resources.iter().flatten().collect();
            assert!(
                resources
                    .iter()
                    .all(|x| *x == "nodes/status" || *x == "events"),
                "writes {writes:?} on {resources:?}"
            );
        }
    }
    // The bindings point at the ServiceAccount the DaemonSet runs as.
    let sa: ServiceAccount = one(&rbac, "ServiceAccount");
    let ds: DaemonSet = one(&deploy.join("daemonset.yaml"), "DaemonSet");
    assert_eq!(pod_spec(&ds).service_account_name, sa.metadata.name);
    assert_eq!(ds.metadata.namespace, sa.metadata.namespace);
    let crb: ClusterRoleBinding = one(&rbac, "ClusterRoleBinding");
    let rbs: Vec<RoleBinding> = all(&rbac, "RoleBinding");
    for subjects in std::iter::once(&crb.subjects).chain(rbs.iter().map(|b| &b.subjects)) {
        let s = &subjects.as_ref().expect("subjects")[0];
        assert_eq!(
            (Some(&s.name), s.namespace.as_ref()),
            (sa.metadata.name.as_ref(), sa.metadata.namespace.as_ref())
        );
    }
    // system-node-critical outside kube-system needs the quota.
    let quota: ResourceQuota = one(&deploy.join("namespace.yaml"), "ResourceQuota");
    assert_eq!(quota.metadata.namespace, ds.metadata.namespace);
    let scope = quota
        .spec
        .and_then(|s| s.scope_selector)
        .and_then(|s| s.match_expressions)
        .expect("scopeSelector");
    assert!(scope[0]
        .values
        .iter()
        .flatten()
        .any(|v| v == "system-node-critical"));
}

/// The README's BIRD ToR config for a cluster parses (`bird -p`), where
/// BIRD is installed (it is on the build machines and in CI).
#[test]
fn the_bird_tor_config_for_a_cluster_parses() {
    let conf = repo().join("examples/bgp/bird-tor-cluster.conf");
    let Some(bird) = tortie_integration::which("bird") else {
        assert!(!tortie_integration::in_ci(), "bird is missing under CI");
        tortie_integration::report_skip("no bird");
        return;
    };
    let out = tortie_integration::run_with_timeout(
        std::process::Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(&conf),
        std::time::Duration::from_secs(10),
    )
    .expect("run bird -p");
    assert!(
        out.status.success(),
        "bird -p {}: {}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
