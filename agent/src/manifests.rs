//! Loading Kubernetes objects from a directory of YAML manifests.
//!
//! Owns: reading every `*.yaml`/`*.yml` under a directory (recursively, in
//! sorted path order, hidden entries skipped so a ConfigMap mount's `..data`
//! twin is not read twice), splitting multi-document files at `---`, and
//! turning each document into a typed k8s-openapi object by
//! `apiVersion`/`kind`. Kinds it does not type (tortie's own CRDs, Services,
//! ...) are kept as raw JSON values for their own loaders.
//!
//! A document that does not parse is an error naming the file, the
//! document's index, the kind/name when known and the reason; every other
//! document still loads (one bad manifest must not take the node's policy
//! down). Namespaces get the `kubernetes.io/metadata.name` label, as the API
//! server adds it, and namespaced objects without a namespace get `default`,
//! as `kubectl apply` does.
//!
//! Must never: decide what objects mean (the policy compiler, IPAM and BGP
//! config do), or watch the directory (the datastore does).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tortie_policy::model::{LocalWorkload, SlimPod, Snapshot};
use tortie_policy::naming::host_interface_name;

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Where an object came from: file and 1-based document index in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)
    }
}

/// An object of a kind this loader does not type (kept for later loaders).
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub source: Source,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub value: serde_json::Value,
}

/// A document that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}{}: {reason}", object_label(.kind, .name))]
pub struct ManifestError {
    pub at: Source,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub reason: String,
}

fn object_label(kind: &Option<String>, name: &Option<String>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(n)) => format!(" ({n})"),
        (None, None) => String::new(),
    }
}

/// Everything loaded from a directory (or cached from the API).
///
/// Pods and Nodes, the kinds a cluster has thousands of, are held by `Arc`
/// so the datastore, its published snapshots, the model and the policy
/// snapshot share one copy; pods are [`SlimPod`]s (only what tortie
/// reads). Cloning a `Manifests` copies pointers, not objects.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Arc<SlimPod>>,
    pub nodes: Vec<Arc<Node>>,
    pub secrets: Vec<Secret>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Kinds not typed here, in load order.
    pub other: Vec<RawObject>,
    /// Documents that failed; everything else loaded.
    pub errors: Vec<ManifestError>,
    /// First source of each object, to report duplicates.
    seen: BTreeMap<(String, String, String), Source>,
}

/// Failure to read the directory itself (a single bad file is a
/// [`ManifestError`] in [`Manifests::errors`] instead).
#[derive(Debug, thiserror::Error)]
#[error("reading manifests under {path}")]
pub struct LoadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Loads every `*.yaml`/`*.yml` file under `dir`, recursively, sorted.
pub fn load_dir(dir: &Path) -> Result<Manifests, LoadError> {
    let files = list_files(dir)?;
    let mut manifests = Manifests::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => manifests.add_str(&file, &text),
            Err(e) => manifests.errors.push(ManifestError {
                at: Source {
                    file: file.clone(),
                    document: 0,
                },
                kind: None,
                name: None,
                reason: format!("cannot read file: {e}"),
            }),
        }
    }
    Ok(manifests)
}

/// The manifest files under `dir` that [`load_dir`] reads, in its order
/// (for the file datastore, which keeps each file's last good text).
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let err = |source| LoadError {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        // Follows symlinks, as a mounted ConfigMap's entries are symlinks.
        let meta = std::fs::metadata(&path).map_err(err)?;
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Splits a YAML stream at document markers (`---` at the start of a line),
/// keeping 1-based document indexes. Splitting by hand, rather than letting
/// the YAML parser iterate, keeps a syntax error inside one document from
/// losing the documents after it.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut index = 1;
    for line in text.lines() {
        let marker = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line.starts_with("---#");
        if marker {
            docs.push((index, std::mem::take(&mut current)));
            index += 1;
            // `--- {a: 1}` carries content on the marker line.
            current.push_str(line.get(3..).unwrap_or_default());
            current.push('\n');
        } else if line == "..." {
            // Explicit document end: what follows before `---` is ignored.
            continue;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((index, current));
    docs.retain(|(_, d)| !is_blank_document(d));
    docs
}

fn is_blank_document(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

impl Manifests {
    /// Adds every document of one file's text.
    pub fn add_str(&mut self, file: &Path, text: &str) {
        for (document, doc) in split_documents(text) {
            let source = Source {
                file: file.to_path_buf(),
                document,
            };
            if let Err(e) = self.add_document(source, &doc) {
                self.errors.push(e);
            }
        }
    }

    fn add_document(&mut self, source: Source, doc: &str) -> Result<(), ManifestError> {
        let fail = |kind: Option<&str>, name: Option<&str>, reason: String| ManifestError {
            at: source.clone(),
            kind: kind.map(String::from),
            name: name.map(String::from),
            reason,
        };
        let value: serde_norway::Value = serde_norway::from_str(doc)
            .map_err(|e| fail(None, None, format!("not valid YAML: {e}")))?;
        if value.is_null() {
            return Ok(());
        }
        if !value.is_mapping() {
            return Err(fail(None, None, "a manifest must be a mapping".into()));
        }
        let text_field = |v: &serde_norway::Value, key: &str| {
            v.get(key).and_then(|x| x.as_str()).map(String::from)
        };
        let metadata = value.get("metadata");
        let name = metadata.and_then(|m| text_field(m, "name"));
        let namespace = metadata.and_then(|m| text_field(m, "namespace"));
        let kind = text_field(&value, "kind");
        let api_version = text_field(&value, "apiVersion");
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(fail(
                value.get("kind").and_then(|k| k.as_str()),
                name.as_deref(),
                "missing apiVersion or kind".into(),
            ));
        };
        let shown_name = match (&namespace, &name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        };
        let typed = |reason: serde_norway::Error| {
            fail(
                Some(&kind),
                shown_name.as_deref(),
                format!("not a valid {api_version} {kind}: {reason}"),
            )
        };
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                let mut ns: Namespace = serde_norway::from_value(value).map_err(typed)?;
                let name = require_name(&ns.metadata).map_err(|r| fail(Some(&kind), None, r))?;
                ns.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
                self.remember(&kind, "", &name, &source)?;
                self.namespaces.push(ns);
            }
            ("v1", "Node") => {
                let node: Node = serde_norway::from_value(value).map_err(typed)?;
                let name = require_name(&node.metadata).map_err(|r| fail(Some(&kind), None, r))?;
                self.remember(&kind, "", &name, &source)?;
                self.nodes.push(Arc::new(node));
            }
            ("v1", "Pod") => {
                // Parsed as the API type first, so a manifest is checked as
                // strictly as before, then slimmed.
                let mut pod: Pod = serde_norway::from_value(value).map_err(typed)?;
                let (ns, name) =
                    namespaced(&mut pod.metadata).map_err(|r| fail(Some(&kind), None, r))?;
                self.remember(&kind, &ns, &name, &source)?;
                self.pods.push(Arc::new(SlimPod::from_pod(&pod)));
            }
            ("v1", "Secret") => {
                let mut secret: Secret = serde_norway::from_value(value).map_err(typed)?;
                let (ns, name) =
                    namespaced(&mut secret.metadata).map_err(|r| fail(Some(&kind), None, r))?;
                self.remember(&kind, &ns, &name, &source)?;
                self.secrets.push(secret);
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let mut policy: NetworkPolicy = serde_norway::from_value(value).map_err(typed)?;
                let (ns, name) =
                    namespaced(&mut policy.metadata).map_err(|r| fail(Some(&kind), None, r))?;
                self.remember(&kind, &ns, &name, &source)?;
                self.network_policies.push(policy);
            }
            _ => {
                let json = serde_json::to_value(&value).map_err(|e| {
                    fail(
                        Some(&kind),
                        shown_name.as_deref(),
                        format!("cannot represent as JSON: {e}"),
                    )
                })?;
                self.other.push(RawObject {
                    source,
                    api_version,
                    kind,
                    namespace,
                    name,
                    value: json,
                });
            }
        }
        Ok(())
    }

    /// Records an object's identity; a second object with the same kind,
    /// namespace and name is rejected (the API server would refuse it too).
    fn remember(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        source: &Source,
    ) -> Result<(), ManifestError> {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        if let Some(first) = self.seen.get(&key) {
            let shown = if namespace.is_empty() {
                name.to_string()
            } else {
                format!("{namespace}/{name}")
            };
            return Err(ManifestError {
                at: source.clone(),
                kind: Some(kind.to_string()),
                name: Some(shown),
                reason: format!("duplicate object, first defined at {first}; this one is ignored"),
            });
        }
        self.seen.insert(key, source.clone());
        Ok(())
    }

    /// Appends another load's objects (one file's, for a datastore that
    /// re-reads only changed files), in order. An object already present
    /// (same kind, namespace and name) is rejected with the same error
    /// [`Manifests::add_str`] gives, so the merged result equals loading
    /// the files one after the other.
    pub fn extend_from(&mut self, other: &Manifests) {
        fn key_of(kind: &str, meta: &ObjectMeta) -> (String, String, String) {
            (
                kind.to_string(),
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        }
        fn take<T: Clone>(
            this: &mut Manifests,
            other: &Manifests,
            items: &[T],
            key: impl Fn(&T) -> (String, String, String),
            push: impl Fn(&mut Manifests, T),
        ) {
            for item in items {
                let key = key(item);
                let Some(source) = other.seen.get(&key) else {
                    continue;
                };
                let source = source.clone();
                match this.remember(&key.0, &key.1, &key.2, &source) {
                    Ok(()) => push(this, item.clone()),
                    Err(e) => this.errors.push(e),
                }
            }
        }
        take(
            self,
            other,
            &other.namespaces,
            |o| key_of("Namespace", &o.metadata),
            |m, o| m.namespaces.push(o),
        );
        take(
            self,
            other,
            &other.nodes,
            |o| key_of("Node", &o.metadata),
            |m, o| m.nodes.push(o),
        );
        take(
            self,
            other,
            &other.pods,
            |o| {
                (
                    "Pod".to_string(),
                    o.namespace.to_string(),
                    o.name.to_string(),
                )
            },
            |m, o| m.pods.push(o),
        );
        take(
            self,
            other,
            &other.secrets,
            |o| key_of("Secret", &o.metadata),
            |m, o| m.secrets.push(o),
        );
        take(
            self,
            other,
            &other.network_policies,
            |o| key_of("NetworkPolicy", &o.metadata),
            |m, o| m.network_policies.push(o),
        );
        self.other.extend(other.other.iter().cloned());
        self.errors.extend(other.errors.iter().cloned());
    }

    /// Number of objects loaded (typed and raw).
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.pods.len()
            + self.nodes.len()
            + self.secrets.len()
            + self.network_policies.len()
            + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Manifests {
    /// The policy compiler's input for one node: every namespace, pod and
    /// NetworkPolicy, and as local workloads the pods scheduled on `node`
    /// that are not host-network (their host-side veth named as the CNI
    /// names it). `unknown_interfaces` is left to the caller, who can see
    /// the node's links.
    pub fn policy_snapshot(&self, node: &str) -> Snapshot {
        let mut local: Vec<LocalWorkload> = self
            .pods
            .iter()
            .filter(|p| p.is_on(node) && !p.host_network && !p.name.is_empty())
            .map(|p| LocalWorkload {
                interface: host_interface_name(&p.namespace, &p.name),
                namespace: p.namespace.to_string(),
                pod: p.name.to_string(),
            })
            .collect();
        local.sort();
        Snapshot {
            namespaces: self.namespaces.clone(),
            pods: self.pods.clone(),
            policies: self.network_policies.clone(),
            local,
            unknown_interfaces: Vec::new(),
        }
    }
}

fn require_name(meta: &ObjectMeta) -> Result<String, String> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err("metadata.name is missing".into()),
    }
}

fn namespaced(meta: &mut ObjectMeta) -> Result<(String, String), String> {
    let name = require_name(meta)?;
    let ns = meta.namespace.get_or_insert_with(|| "default".to_string());
    Ok((ns.clone(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Manifests {
        let mut m = Manifests::default();
        m.add_str(Path::new("m.yaml"), text);
        m
    }

    #[test]
    fn loads_typed_kinds_and_keeps_unknown_ones() {
        let m = load(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {ns: x}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {pod: a}}\n\
             spec:\n  nodeName: n1\n  containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}]}]\n\
             status: {podIPs: [{ip: 10.244.1.10}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n\
             spec: {podSelector: {}, policyTypes: [Ingress]}\n---\n\
             apiVersion: tortie.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {peerIP: 192.0.2.1, asNumber: 64512}\n---\n\
             apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDRs: [10.244.1.0/24]}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: pw, namespace: kube-system}\nstringData: {password: s}\n",
        );
        assert!(m.errors.is_empty(), "{:?}", m.errors);
        assert_eq!(m.len(), 6);
        let labels = m.namespaces[0].metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
            Some("x")
        );
        assert_eq!(labels.get("ns").map(String::as_str), Some("x"));
        // Namespaced objects without a namespace land in `default`.
        assert_eq!(
            m.network_policies[0].metadata.namespace.as_deref(),
            Some("default")
        );
        assert_eq!(m.other[0].kind, "BGPPeer");
        assert_eq!(m.other[0].value["spec"]["peerIP"], "192.0.2.1");
        assert_eq!(m.other[0].source.document, 4);
        assert_eq!(m.pods[0].node_name.as_deref(), Some("n1"));
    }

    #[test]
    fn a_bad_document_names_file_index_and_object_and_others_still_load() {
        let m = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: x}\n\
             spec: {podSelector: {matchLabels: [1, 2]}}\n---\n\
             key: [unclosed\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n",
        );
        assert_eq!(m.namespaces.len(), 2);
        assert_eq!(m.errors.len(), 2, "{:?}", m.errors);
        let first = m.errors[0].to_string();
        assert!(
            first.starts_with("m.yaml document 2 (NetworkPolicy x/bad): not a valid networking.k8s.io/v1 NetworkPolicy"),
            "{first}"
        );
        let second = m.errors[1].to_string();
        assert!(
            second.starts_with("m.yaml document 3: not valid YAML"),
            "{second}"
        );
    }

    #[test]
    fn missing_kind_or_name_and_duplicates_are_errors() {
        let m = load(
            "metadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: z}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: z}\n",
        );
        let errs: Vec<String> = m.errors.iter().map(ToString::to_string).collect();
        assert_eq!(m.namespaces.len(), 1);
        assert!(
            errs[0].contains("document 1 (x): missing apiVersion or kind"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("document 2 (Namespace): metadata.name is missing"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("duplicate object, first defined at m.yaml document 3"),
            "{errs:?}"
        );
    }

    #[test]
    fn snapshot_holds_the_nodes_non_host_network_pods_as_workloads() {
        let pod = |name: &str, node: &str, host: bool| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: x}}\n\
                 spec: {{nodeName: {node}, hostNetwork: {host}, containers: []}}\n---\n"
            )
        };
        let m = load(&format!(
            "{}{}{}",
            pod("a", "n1", false),
            pod("b", "n2", false),
            pod("h", "n1", true)
        ));
        let snap = m.policy_snapshot("n1");
        assert_eq!(snap.pods.len(), 3);
        assert_eq!(snap.local.len(), 1);
        assert_eq!(snap.local[0].pod, "a");
        assert_eq!(snap.local[0].interface, host_interface_name("x", "a"));
    }

    #[test]
    fn extending_file_by_file_equals_loading_them_in_order() {
        let a = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: []}\n";
        let b = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: []}\n---\n\
                 apiVersion: v1\nkind: Node\nmetadata: {name: n}\n---\nbad: [\n";
        let mut whole = Manifests::default();
        whole.add_str(Path::new("a.yaml"), a);
        whole.add_str(Path::new("b.yaml"), b);
        let mut merged = Manifests::default();
        for (f, t) in [("a.yaml", a), ("b.yaml", b)] {
            let mut one = Manifests::default();
            one.add_str(Path::new(f), t);
            merged.extend_from(&one);
        }
        assert_eq!(merged.len(), whole.len());
        assert_eq!(merged.len(), 3);
        let errs = |m: &Manifests| {
            let mut e: Vec<String> = m.errors.iter().map(ToString::to_string).collect();
            e.sort();
            e
        };
        assert_eq!(errs(&merged), errs(&whole));
        assert!(errs(&merged)[0].contains(
            "b.yaml document 1 (Pod x/p): duplicate object, first defined at a.yaml document 2"
        ));
    }

    #[test]
    fn splits_documents_with_markers_comments_and_blank_ones() {
        let docs =
            split_documents("# leading comment\n---\na: 1\n--- # c\nb: 2\n...\n---\n\n---\nc: 3");
        let idx: Vec<usize> = docs.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![2, 3, 5]);
        assert!(docs[1].1.contains("b: 2"));
    }

    #[test]
    fn loads_a_directory_recursively_in_sorted_order_skipping_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir(&sub).unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let ns = |n: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n");
        std::fs::write(sub.join("z.yml"), ns("second")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), ns("first")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), ns("ignored")).unwrap();
        std::fs::write(dir.path().join("..data").join("c.yaml"), ns("hidden")).unwrap();
        let m = load_dir(dir.path()).unwrap();
        let names: Vec<_> = m
            .namespaces
            .iter()
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["first", "second"]);
        assert!(load_dir(&dir.path().join("missing")).is_err());
    }
}
