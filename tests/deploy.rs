//! The deployment under `deploy/` checked offline: the Kubernetes base agrees with the example
//! configuration and with itself, generated files are in sync with their sources, every
//! manifest passes `kubernetes-validate --strict`, the Istio and Prometheus-operator resources
//! pass schema validation (tests/deploy/validate.mjs), every YAML file passes yamllint, and
//! the container image builds the way the test suite does.
//!
//! A missing tool fails the test with the command that installs it (tests/run-all.sh installs
//! them all): a manifest we ship must never go unchecked because a tool was absent.

mod generated;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mcp_authz::config::Config;
use mcp_authz::render::istio::{self, IstioPart};
use serde::Deserialize;
use serde_yaml::Value;

/// Rewrites every generated file from its source instead of comparing.
const BLESS_VAR: &str = "MCP_AUTHZ_BLESS";
const BLESS: &str = "MCP_AUTHZ_BLESS=1 cargo test --test deploy";
const KUBE_DIR: &str = "deploy/kubernetes";
/// The oldest Kubernetes the base supports (the kubelet's preStop `sleep` action) and the
/// newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
const INSTALL_KUBERNETES_VALIDATE: &str =
    "python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt";
const INSTALL_YAMLLINT: &str = "apt-get install -y yamllint";
const INSTALL_NODE_MODELS: &str = "(cd tests/deploy && npm ci)";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn doc(rel: &str) -> Value {
    let mut all = docs(&read(rel));
    assert_eq!(all.len(), 1, "{rel}: expected one YAML document");
    all.remove(0)
}

fn blessing() -> bool {
    std::env::var_os(BLESS_VAR).is_some()
}

/// Compares a generated file with what its source makes now, or rewrites it when blessing.
fn check_generated(rel: &str, fresh: &str) {
    let path = repo().join(rel);
    if blessing() {
        // Write beside it and rename: other tests read these files while this one runs.
        let tmp = path.with_extension("blessing");
        std::fs::write(&tmp, fresh).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
        std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(diff) = generated::first_difference(&shipped, fresh) {
        panic!("{rel} is out of date ({diff})\nregenerate it with: {BLESS}");
    }
}

fn example_text() -> String {
    read("deploy/mcp-authz.yaml")
}

fn example() -> Config {
    Config::from_yaml(&example_text()).expect("deploy/mcp-authz.yaml is valid")
}

/// `deploy/kubernetes/*.yaml` except the kustomization: file name → its one document.
fn manifests() -> BTreeMap<String, Value> {
    let dir = repo().join(KUBE_DIR);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            out.insert(name.clone(), doc(&format!("{KUBE_DIR}/{name}")));
        }
    }
    out
}

fn kind<'a>(all: &'a BTreeMap<String, Value>, kind: &str, name: &str) -> &'a Value {
    all.values()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {KUBE_DIR}"))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    serde_yaml::from_value(v.clone()).unwrap_or_default()
}

fn selects(selector: &Value, target: &Value) -> bool {
    let want = labels(selector);
    let have = labels(target);
    !want.is_empty() && want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn run(cmd: &mut Command, what: &str, install: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e}\ninstall it from the repository root with:\n  {install}")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// Generated files
// ---------------------------------------------------------------------------

#[test]
fn istio_files_are_the_render_of_the_example_config() {
    let config = example();
    for (part, file) in [
        (IstioPart::MeshConfig, "deploy/istio/mesh-config.yaml"),
        (IstioPart::Resources, "deploy/istio/resources.yaml"),
    ] {
        let fresh = istio::istio(&config, part).expect("the example config renders for Istio");
        check_generated(file, &fresh);
    }
}

const CONFIGMAP_HEADER: &str = "\
# The example configuration, deploy/mcp-authz.yaml, as the ConfigMap mcp-authz reads.
# Generated: edit deploy/mcp-authz.yaml, then run `MCP_AUTHZ_BLESS=1 cargo test --test deploy`
# (tests/deploy.rs keeps the two equal and runs `mcp-authz check-config` on this copy).
#
# The Deployment mounts it as a directory, not a subPath, so an update reaches the pods'
# file within about a minute and mcp-authz reloads it without a restart; a configuration
# that does not validate is refused, the old one stays, and
# mcp_authz_config_reloads_total{result=\"error\"} counts it.
apiVersion: v1
kind: ConfigMap
metadata:
  name: mcp-authz
  namespace: mcp-authz
  labels:
    app.kubernetes.io/name: mcp-authz
data:
  mcp-authz.yaml: |
";

#[test]
fn configmap_holds_the_example_config() {
    let example = example_text();
    if blessing() {
        assert!(
            example.ends_with('\n') && !example.ends_with("\n\n"),
            "deploy/mcp-authz.yaml must end with exactly one newline to survive a YAML block"
        );
        let mut out = CONFIGMAP_HEADER.to_owned();
        for line in example.lines() {
            if !line.is_empty() {
                out.push_str("    ");
            }
            out.push_str(line);
            out.push('\n');
        }
        check_generated(&format!("{KUBE_DIR}/configmap.yaml"), &out);
    }
    let cm = doc(&format!("{KUBE_DIR}/configmap.yaml"));
    assert_eq!(cm["kind"], "ConfigMap");
    let data = cm["data"]["mcp-authz.yaml"].as_str().unwrap_or_default();
    assert!(
        data == example,
        "deploy/kubernetes/configmap.yaml does not hold deploy/mcp-authz.yaml byte for byte\n\
         regenerate it with: {BLESS}"
    );
}

#[test]
fn configmap_config_passes_check_config() {
    let cm = doc(&format!("{KUBE_DIR}/configmap.yaml"));
    let data = cm["data"]["mcp-authz.yaml"]
        .as_str()
        .expect("the ConfigMap has data.mcp-authz.yaml");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-configmap");
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let file = dir.join("mcp-authz.yaml");
    std::fs::write(&file, data).expect("write the ConfigMap's config");
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run mcp-authz check-config");
    let said = text(&out);
    assert!(
        out.status.success(),
        "check-config refused the ConfigMap's config:\n{said}"
    );
    assert!(said.contains("config OK"), "{said}");
    // In a pod both listeners must be reachable from other pods (Service, probes, Prometheus).
    assert!(said.contains("grpc listener:  0.0.0.0:"), "{said}");
    assert!(said.contains("admin listener: 0.0.0.0:"), "{said}");
}

/// `deploy/prometheus/rules.yaml` without its leading comment block, under `spec:`.
fn prometheusrule_text(rules: &str) -> String {
    let mut out = String::from(
        "\
# The alert rules of deploy/prometheus/rules.yaml as a Prometheus-operator PrometheusRule.
# Generated: edit deploy/prometheus/rules.yaml, then run
# `MCP_AUTHZ_BLESS=1 cargo test --test deploy` (tests/deploy.rs checks that spec.groups equal
# that file's groups). Your Prometheus must select it: with kube-prometheus-stack, add its
# `release` label or set ruleSelectorNilUsesHelmValues: false. The rules select
# job=\"mcp-authz\", the job the ServiceMonitor's jobLabel produces.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mcp-authz
  namespace: mcp-authz
  labels:
    app.kubernetes.io/name: mcp-authz
spec:
",
    );
    let body = rules
        .lines()
        .skip_while(|l| l.starts_with('#') || l.trim().is_empty());
    for line in body {
        if !line.is_empty() {
            out.push_str("  ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn prometheusrule_groups_are_the_alert_rules() {
    let rules = read("deploy/prometheus/rules.yaml");
    let want = doc("deploy/prometheus/rules.yaml");
    let groups = want["groups"].as_sequence().expect("rules.yaml has groups");
    assert!(!groups.is_empty(), "rules.yaml has no groups");
    if blessing() {
        check_generated(
            &format!("{KUBE_DIR}/prometheusrule.yaml"),
            &prometheusrule_text(&rules),
        );
    }
    let pr = doc(&format!("{KUBE_DIR}/prometheusrule.yaml"));
    assert_eq!(pr["kind"], "PrometheusRule");
    assert!(
        pr["spec"]["groups"] == want["groups"],
        "deploy/kubernetes/prometheusrule.yaml spec.groups differ from deploy/prometheus/rules.yaml groups\n\
         regenerate it with: {BLESS}"
    );
    assert_eq!(
        pr["spec"].as_mapping().map(|m| m.len()),
        Some(1),
        "spec holds only groups"
    );
}

// ---------------------------------------------------------------------------
// The Kubernetes base
// ---------------------------------------------------------------------------

#[test]
fn kustomization_lists_every_manifest() {
    let k = doc(&format!("{KUBE_DIR}/kustomization.yaml"));
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .expect("kustomization.yaml has resources")
        .iter()
        .map(|r| r.as_str().expect("resource is a file name"))
        .collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a file is listed twice: {listed:?}"
    );
    let on_disk: BTreeSet<String> = manifests().into_keys().collect();
    let listed: BTreeSet<String> = unique.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources must be exactly the manifests in {KUBE_DIR}"
    );
    // Nothing in the base may be left to a generator the test suite cannot run.
    for field in [
        "configMapGenerator",
        "secretGenerator",
        "helmCharts",
        "components",
    ] {
        assert!(k[field].is_null(), "kustomization.yaml uses {field}");
    }
}

#[test]
fn every_object_is_in_the_mcp_authz_namespace_with_its_labels() {
    let all = manifests();
    let expected: BTreeSet<&str> = [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    .into();
    let kinds: BTreeSet<&str> = all.values().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, expected);
    for (file, d) in &all {
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/name"], "mcp-authz",
            "{file}: label app.kubernetes.io/name"
        );
        if d["kind"] == "Namespace" {
            assert_eq!(d["metadata"]["name"], "mcp-authz");
            assert_eq!(
                d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                "restricted"
            );
        } else {
            assert_eq!(d["metadata"]["namespace"], "mcp-authz", "{file}: namespace");
        }
    }
    // The example's `istio:` section names this Service.
    assert_eq!(
        example().istio.service_host,
        "mcp-authz.mcp-authz.svc.cluster.local"
    );
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(c: &Value) -> Vec<&str> {
    c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect()
}

fn arg_after<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

fn container_port(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port {name}"))
}

/// `"96Mi"` and friends in bytes (the binary suffixes the base uses).
fn quantity(q: &Value) -> u64 {
    let s = q.as_str().expect("quantity string");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().expect("integer quantity");
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unexpected quantity unit {other:?} in {s:?}"),
    }
}

#[test]
fn deployment_runs_the_config_safely_and_drains() {
    let all = manifests();
    let d = kind(&all, "Deployment", "mcp-authz");
    let spec = &d["spec"];
    let pod = &spec["template"]["spec"];
    let c = container(d);
    let config = Config::from_yaml(
        kind(&all, "ConfigMap", "mcp-authz")["data"]["mcp-authz.yaml"]
            .as_str()
            .expect("config"),
    )
    .expect("the ConfigMap's config is valid");

    assert!(spec["replicas"].as_u64().unwrap_or(0) >= 2, "2+ replicas");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert!(selects(
        &spec["selector"]["matchLabels"],
        &spec["template"]["metadata"]["labels"]
    ));
    let spread = pod["topologySpreadConstraints"]
        .as_sequence()
        .expect("topologySpreadConstraints");
    assert!(
        spread
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && t["whenUnsatisfiable"] == "DoNotSchedule"
                && selects(
                    &t["labelSelector"]["matchLabels"],
                    &spec["template"]["metadata"]["labels"]
                )),
        "replicas spread across nodes"
    );

    // The image is this version of mcp-authz.
    let image = c["image"].as_str().expect("image");
    assert!(
        image.ends_with(&format!("/mcp-authz:{}", env!("CARGO_PKG_VERSION"))),
        "image {image:?} should be tagged {}",
        env!("CARGO_PKG_VERSION")
    );

    // serve --config <the mounted ConfigMap>, ports as the config listens.
    let a = args(c);
    assert_eq!(a[0], "serve");
    let config_path = arg_after(&a, "--config").expect("--config");
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(m["mountPath"].as_str().unwrap_or("-")))
        .expect("the config file is on a mounted volume");
    assert!(
        mount["subPath"].is_null(),
        "a subPath mount never sees ConfigMap updates (no hot reload)"
    );
    assert_eq!(mount["readOnly"], true);
    let file_name = Path::new(config_path).file_name().and_then(|f| f.to_str());
    assert_eq!(file_name, Some("mcp-authz.yaml"));
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], "mcp-authz");
    assert_eq!(
        container_port(c, "grpc"),
        u64::from(config.grpc_addr.port())
    );
    assert_eq!(
        container_port(c, "admin"),
        u64::from(config.admin_addr.port())
    );

    // Probes on the admin listener's health endpoints.
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");

    // Graceful termination covers the preStop pause and the drain.
    let drain: u64 = arg_after(&a, "--drain-seconds")
        .expect("--drain-seconds")
        .parse()
        .expect("drain seconds");
    let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > pause + drain,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pause} + drain {drain}"
    );

    // Locked down: restricted Pod Security Standard and then some.
    for sc in [&pod["securityContext"], &c["securityContext"]] {
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    }
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(pod["automountServiceAccountToken"], false);

    // Memory sized (see the comment in deployment.yaml): a limit above the request.
    let r = &c["resources"];
    let request = quantity(&r["requests"]["memory"]);
    let limit = quantity(&r["limits"]["memory"]);
    assert!(
        request >= 32 << 20 && limit > request,
        "{request} / {limit}"
    );
    assert!(r["requests"]["cpu"].is_string());
}

#[test]
fn services_monitor_policy_and_budget_agree_with_the_pods() {
    let all = manifests();
    let d = kind(&all, "Deployment", "mcp-authz");
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let c = container(d);
    let grpc = container_port(c, "grpc");
    let admin = container_port(c, "admin");
    let service_port = |svc: &Value, name: &str| -> Value {
        svc["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };

    let svc = kind(&all, "Service", "mcp-authz");
    assert!(selects(&svc["spec"]["selector"], pod_labels));
    let g = service_port(svc, "grpc");
    assert_eq!(g["targetPort"], "grpc");
    assert_eq!(g["appProtocol"], "grpc");
    assert_eq!(service_port(svc, "http-metrics")["targetPort"], "admin");

    let headless = kind(&all, "Service", "mcp-authz-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(selects(&headless["spec"]["selector"], pod_labels));
    assert!(service_port(headless, "http-metrics").is_null());

    // The ServiceMonitor scrapes the one Service with the metrics port, as job="mcp-authz",
    // the job deploy/prometheus/rules.yaml selects.
    let sm = kind(&all, "ServiceMonitor", "mcp-authz");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    ));
    assert!(!selects(
        &sm["spec"]["selector"]["matchLabels"],
        &headless["metadata"]["labels"]
    ));
    let endpoint = &sm["spec"]["endpoints"][0];
    assert!(!service_port(svc, endpoint["port"].as_str().expect("port name")).is_null());
    assert_eq!(endpoint["path"], "/metrics");
    let job_label = sm["spec"]["jobLabel"].as_str().expect("jobLabel");
    assert_eq!(svc["metadata"]["labels"][job_label], "mcp-authz");
    assert!(read("deploy/prometheus/rules.yaml").contains("job=\"mcp-authz\""));

    // Ingress only to the two listeners; egress to DNS and https.
    let np = kind(&all, "NetworkPolicy", "mcp-authz");
    assert!(selects(
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let ports = |rules: &Value| -> BTreeSet<u64> {
        rules
            .as_sequence()
            .expect("rules")
            .iter()
            .flat_map(|r| r["ports"].as_sequence().cloned().unwrap_or_default())
            .map(|p| p["port"].as_u64().expect("numeric port"))
            .collect()
    };
    assert_eq!(ports(&np["spec"]["ingress"]), [grpc, admin].into());
    let egress = ports(&np["spec"]["egress"]);
    assert!(egress.contains(&53) && egress.contains(&443), "{egress:?}");
    for rule in np["spec"]["ingress"].as_sequence().expect("ingress") {
        let from = rule["from"].as_sequence().expect("from");
        assert!(
            from.iter().all(|f| f["podSelector"]["matchLabels"]
                .as_mapping()
                .is_some_and(|m| !m.is_empty())),
            "every ingress source names its pods"
        );
    }

    let pdb = kind(&all, "PodDisruptionBudget", "mcp-authz");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    assert!(pdb["spec"]["minAvailable"].as_u64() < d["spec"]["replicas"].as_u64());

    // The Istio provider calls this Service on this port.
    let mesh = doc("deploy/istio/mesh-config.yaml");
    let p = &mesh["meshConfig"]["extensionProviders"][0]["envoyExtAuthzGrpc"];
    assert_eq!(
        p["service"].as_str(),
        Some(
            format!(
                "{}.{}.svc.cluster.local",
                svc["metadata"]["name"].as_str().expect("name"),
                svc["metadata"]["namespace"].as_str().expect("namespace")
            )
            .as_str()
        )
    );
    assert_eq!(p["port"], g["port"]);
}

// ---------------------------------------------------------------------------
// External validators
// ---------------------------------------------------------------------------

fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("MCP_AUTHZ_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/kubernetes-validate"));
    assert!(
        path.is_file(),
        "kubernetes-validate not found at {} — install it from the repository root with:\n  \
         {INSTALL_KUBERNETES_VALIDATE}\n(or point MCP_AUTHZ_KUBERNETES_VALIDATE at it)",
        path.display()
    );
    path
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let tool = kubernetes_validate();
    let files: Vec<PathBuf> = manifests()
        .into_keys()
        .map(|f| repo().join(KUBE_DIR).join(f))
        .chain(
            ["mesh-config.yaml", "resources.yaml"]
                .iter()
                .map(|f| repo().join("deploy/istio").join(f))
                .filter(|p| {
                    // The meshConfig fragment is Helm values, not a Kubernetes object.
                    !p.ends_with("mesh-config.yaml")
                }),
        )
        .collect();
    let core: BTreeSet<&str> = [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    .into();
    // Strict mode bites: a misspelt field is refused, not ignored.
    let typo = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deploy-typo.yaml");
    std::fs::write(
        &typo,
        read(&format!("{KUBE_DIR}/deployment.yaml"))
            .replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .expect("write the misspelt Deployment");
    let out = run(
        Command::new(&tool).arg("--strict").arg(&typo),
        "kubernetes-validate",
        INSTALL_KUBERNETES_VALIDATE,
    );
    assert!(
        !out.status.success() && text(&out).contains("readOnlyRootFileSystem"),
        "kubernetes-validate --strict accepted a misspelt field:\n{}",
        text(&out)
    );

    for version in KUBERNETES_VERSIONS {
        let out = run(
            Command::new(&tool)
                .args(["--strict", "--kubernetes-version", version])
                .args(&files),
            "kubernetes-validate",
            INSTALL_KUBERNETES_VALIDATE,
        );
        let said = text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {version} refused a manifest:\n{said}"
        );
        // Every core object must have been validated, not merely passed over.
        for (file, d) in manifests() {
            let k = d["kind"].as_str().expect("kind");
            let line = said.lines().find(|l| l.contains(&file)).unwrap_or_else(|| {
                panic!("kubernetes-validate said nothing about {file}:\n{said}")
            });
            if core.contains(k) {
                assert!(
                    line.starts_with("INFO") && line.contains(" passed for resource "),
                    "{file} ({k}) was not validated against Kubernetes {version}: {line}"
                );
            }
        }
    }
}

/// Every YAML file in the repository, outside build and dependency directories.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let skip = ["target", ".venv", "node_modules", ".git", ".local"];
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !skip.contains(&name) {
                    walk(&path, out);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(repo(), &mut out);
    out.sort();
    out
}

#[test]
fn every_yaml_file_passes_yamllint() {
    let tool = std::env::var_os("MCP_AUTHZ_YAMLLINT").unwrap_or_else(|| "yamllint".into());
    let files = yaml_files();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("deploy/kubernetes/deployment.yaml")),
        "the walk found no manifests: {files:?}"
    );
    let out = run(
        Command::new(&tool)
            .arg("--format")
            .arg("parsable")
            .arg("--config-file")
            .arg(repo().join(".yamllint.yaml"))
            .args(&files),
        "yamllint",
        INSTALL_YAMLLINT,
    );
    assert!(
        out.status.success(),
        "yamllint found errors ({} files checked):\n{}",
        files.len(),
        text(&out)
    );
}

fn node_validator(args: &[&str]) -> String {
    let dir = repo().join("tests/deploy");
    assert!(
        dir.join("node_modules/@kubernetes-models/istio").is_dir()
            && dir
                .join("node_modules/@kubernetes-models/prometheus-operator")
                .is_dir(),
        "the schema models are not installed — install them from the repository root with:\n  \
         {INSTALL_NODE_MODELS}"
    );
    let out = run(
        Command::new("node")
            .arg(dir.join("validate.mjs"))
            .args(args)
            .current_dir(repo()),
        "node (Node 20)",
        "apt-get install -y nodejs",
    );
    let said = text(&out);
    assert!(
        out.status.success(),
        "validate.mjs {args:?} failed:\n{said}"
    );
    said
}

#[test]
fn istio_and_prometheus_operator_resources_pass_schema_validation() {
    // The validator refuses what it must (a misspelt field, a bad enum, a missing field) ...
    let said = node_validator(&["--self-test"]);
    assert!(said.contains("broken refused"), "{said}");
    // ... and accepts every custom resource we ship.
    let files = [
        "deploy/istio/mesh-config.yaml",
        "deploy/istio/resources.yaml",
        "deploy/kubernetes/servicemonitor.yaml",
        "deploy/kubernetes/prometheusrule.yaml",
    ];
    let said = node_validator(&files);
    let expected = 1 + docs(&read("deploy/istio/resources.yaml")).len() + 2;
    assert!(
        said.contains(&format!("validated {expected} documents")),
        "expected {expected} documents validated:\n{said}"
    );
}

// ---------------------------------------------------------------------------
// Container image
// ---------------------------------------------------------------------------

#[test]
fn dockerfile_builds_like_the_test_suite() {
    let dockerfile = read("deploy/docker/Dockerfile");
    // Logical instructions: comments dropped, `\` continuations joined.
    let mut instructions: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                instructions.push(std::mem::take(&mut pending));
            }
        }
    }
    let instructions: Vec<&str> = instructions.iter().map(String::as_str).collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let runtime = froms.last().expect("a final stage");
    assert!(
        runtime.contains("distroless") && runtime.contains("nonroot"),
        "minimal non-root runtime image: {runtime}"
    );
    for f in &froms {
        let image = f.split_whitespace().nth(1).expect("image");
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "pinned base image: {f}"
        );
    }
    // The build stage runs the script the test suite runs.
    let build = "deploy/docker/build.sh";
    assert!(
        instructions
            .iter()
            .any(|l| l.starts_with("RUN") && l.contains(build)),
        "the Dockerfile builds with {build}"
    );
    assert!(
        read("tests/run-all.sh").contains(build),
        "tests/run-all.sh runs {build}"
    );
    // The final stage runs as a numeric non-root user (runAsNonRoot needs a number).
    let user = instructions
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    let uid: u32 = user[5..]
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("numeric USER");
    assert_ne!(uid, 0);
    let deployment = doc(&format!("{KUBE_DIR}/deployment.yaml"));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        u64::from(uid)
    );
    assert!(
        dockerfile.contains("SSL_CERT_FILE"),
        "the CA bundle for https JWKS is named"
    );

    // The context is the repository root: what the build needs is sent, the rest is not.
    let dockerignore = read(".dockerignore");
    let ignore: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target", ".venv", "**/node_modules", ".git"] {
        assert!(
            ignore.iter().any(|l| l.trim_start_matches('/') == excluded),
            ".dockerignore excludes {excluded}: {ignore:?}"
        );
    }
    for needed in [
        "src",
        "proto",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "deploy",
    ] {
        assert!(
            !ignore
                .iter()
                .any(|l| l.trim_start_matches('/').trim_end_matches('/') == needed),
            ".dockerignore must not exclude {needed}"
        );
    }
}
