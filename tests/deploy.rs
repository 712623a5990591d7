//! The deployment files in deploy/ and the Dockerfile, checked for what schema validators cannot
//! see: the Portcullis config inside each manifest is accepted by Portcullis' strict parser, the
//! policies inside compile and define the decision path, names that must agree across files do
//! (Istio provider, ServiceEntry host and port, selector labels), probes hit /health, containers
//! run non-root on a read-only filesystem, and the Dockerfile is multi-stage and non-root.
//!
//! Schema validation itself (Kubernetes, Istio, Helm, Envoy, hadolint) is deploy/validate.sh;
//! `validate_sh_passes` runs it unless .ci/run already did (PORTCULLIS_DEPLOY_VALIDATED=1).

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::config::Config;
use portcullis::policy::{PolicyOptions, Snapshot, Sources};
use serde::Deserialize;
use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of a file, as JSON.
fn docs(rel: &str) -> Vec<Json> {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| Json::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Json], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// Parses a Portcullis config the way `portcullis run --config-file` does.
fn portcullis_config(text: &str, origin: &str) -> Config {
    let tree: Json = yaml_serde::from_str(text).unwrap();
    Config::from_tree(tree, origin).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// Compiles policies (file name -> text) and checks they define the config's decision path.
fn compiles(config: &Config, policies: &[(String, String)], origin: &str) {
    let mut sources = Sources::default();
    for (name, text) in policies {
        sources.add_module(format!("{origin}/{name}"), text.clone());
    }
    let opts = PolicyOptions {
        decision_path: config
            .plugins
            .envoy_ext_authz_grpc
            .decision_path()
            .to_string(),
        ..Default::default()
    };
    let snapshot = Snapshot::build(&sources, &opts, 1).unwrap_or_else(|e| panic!("{origin}: {e}"));
    assert!(
        snapshot.has_decision(),
        "{origin}: no policy defines {}",
        opts.decision_path
    );
}

fn containers(deployment: &Json) -> &Vec<Json> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
}

fn container<'a>(deployment: &'a Json, name: &str) -> &'a Json {
    containers(deployment)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The Portcullis container: non-root, read-only root filesystem, probes on /health.
fn check_portcullis_container(c: &Json, readiness: &str, origin: &str) {
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{origin}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{origin}");
    assert_ne!(sc["runAsUser"], 0, "{origin}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health", "{origin}");
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"], readiness,
        "{origin}"
    );
}

#[test]
fn kubernetes_manifests_carry_a_valid_portcullis_config() {
    let cm = docs("deploy/kubernetes/configmap.yaml");
    let config_text = find(&cm, "ConfigMap", "portcullis-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let config = portcullis_config(config_text, "deploy/kubernetes/configmap.yaml");
    assert!(config.bundles.contains_key("authz"));
    assert!(config.bundle_service("authz").is_ok());
    assert!(
        config.bundle_verification("authz").is_some(),
        "the example verifies bundle signatures"
    );
    let deployment = &docs("deploy/kubernetes/deployment.yaml")[0];
    let pc = container(deployment, "portcullis");
    check_portcullis_container(pc, "/health?bundles", "deploy/kubernetes/deployment.yaml");
    // The token file the config reads is where the Secret is mounted.
    let token_path = config
        .services
        .get("bundles")
        .unwrap()
        .credentials
        .as_ref()
        .unwrap();
    let token_path = token_path
        .bearer
        .as_ref()
        .unwrap()
        .token_path
        .clone()
        .unwrap();
    let mounts = pc["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| token_path.starts_with(m["mountPath"].as_str().unwrap())),
        "{token_path:?} is not under a mount"
    );
    // The persistence directory is writable (an emptyDir), everything else is read-only.
    let persist = config.persistence_directory.clone().unwrap();
    let cache = mounts
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == persist)
        .expect("a mount at the persistence directory");
    assert!(cache["readOnly"].is_null() || cache["readOnly"] == false);
    let secret = &docs("deploy/kubernetes/secret.yaml")[0];
    assert!(secret["stringData"]["bundle-token"].is_string());
}

#[test]
fn istio_names_agree_across_files() {
    let mesh = &docs("deploy/istio/mesh-config.yaml")[0];
    let provider = &mesh["spec"]["meshConfig"]["extensionProviders"][0];
    let grpc = &provider["envoyExtAuthzGrpc"];
    let entry = &docs("deploy/istio/service-entry.yaml")[0];
    assert_eq!(entry["spec"]["hosts"][0], grpc["service"]);
    assert_eq!(entry["spec"]["ports"][0]["number"], grpc["port"]);
    assert_eq!(entry["spec"]["endpoints"][0]["address"], "127.0.0.1");
    let policy = &docs("deploy/istio/authorization-policy.yaml")[0];
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let not_paths: Vec<&str> = policy["spec"]["rules"][0]["to"][0]["operation"]["notPaths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(not_paths.contains(&"/health"), "{not_paths:?}");

    let workload = docs("deploy/istio/workload.yaml");
    let deployment = find(&workload, "Deployment", "demo");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in policy["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[k], v,
            "the AuthorizationPolicy selects the workload"
        );
    }
    let ns = find(&workload, "Namespace", "portcullis-demo");
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    assert_eq!(policy["metadata"]["namespace"], "portcullis-demo");
    assert_eq!(entry["metadata"]["namespace"], "portcullis-demo");

    let config_text =
        find(&workload, "ConfigMap", "portcullis-istio-config")["data"]["config.yaml"]
            .as_str()
            .unwrap();
    let config = portcullis_config(config_text, "deploy/istio/workload.yaml");
    let addr = &config.plugins.envoy_ext_authz_grpc.addr;
    assert!(
        addr.ends_with(&format!(":{}", grpc["port"])),
        "Portcullis listens on {addr}, the provider calls port {}",
        grpc["port"]
    );
    let policies: Vec<(String, String)> =
        find(&workload, "ConfigMap", "portcullis-istio-policy")["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
    compiles(&config, &policies, "deploy/istio/workload.yaml");
    check_portcullis_container(
        container(deployment, "portcullis"),
        "/health?plugins",
        "deploy/istio/workload.yaml",
    );
}

#[test]
fn helm_values_carry_valid_configs_and_policies() {
    let values = &docs("deploy/helm/portcullis/values.yaml")[0];
    let config_text = yaml_serde::to_string(&values["config"]).unwrap();
    let config = portcullis_config(&config_text, "deploy/helm/portcullis/values.yaml config");
    let policies: Vec<(String, String)> = values["policies"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    compiles(&config, &policies, "deploy/helm/portcullis/values.yaml");
    assert_eq!(values["istio"]["provider"], "portcullis-ext-authz-grpc");
    for entry in std::fs::read_dir(root().join("deploy/helm/test-values")).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        let v = &docs(&rel)[0];
        if let Some(config) = v.get("config") {
            portcullis_config(&yaml_serde::to_string(config).unwrap(), &rel);
        }
    }
}

#[test]
fn dockerfile_is_multi_stage_minimal_and_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (op, rest) = l.split_once(char::is_whitespace)?;
            Some((op.to_ascii_uppercase(), rest.trim().to_string()))
        })
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let last = &instructions[*stages.last().unwrap()..];
    let base = &last[0].1;
    assert!(
        base.contains("distroless") || base.starts_with("scratch"),
        "minimal runtime image, got {base}"
    );
    let user = last
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone())
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "non-root user, got {user}");
    assert!(
        !instructions.iter().any(|(op, _)| op == "ADD"),
        "COPY, never ADD"
    );
    assert!(
        last.iter()
            .any(|(op, a)| op == "ENTRYPOINT" && a.contains("portcullis"))
    );
    // Everything the build stage copies exists, and .dockerignore does not hide it.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for (op, args) in &instructions[..*stages.last().unwrap()] {
        if op != "COPY" || args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY {src}: missing");
            assert!(
                !ignore.lines().any(|l| l.trim_end_matches('/') == *src),
                "COPY {src} is excluded by .dockerignore"
            );
        }
    }
}

#[test]
fn validate_sh_passes() {
    if std::env::var("PORTCULLIS_DEPLOY_VALIDATED").as_deref() == Ok("1") {
        eprintln!("deploy/validate.sh already ran in .ci/run");
        return;
    }
    let tools = ["python3", "node", "npm"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if !tools {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs python3, node and npm for deploy/validate.sh"
        );
        eprintln!("skipped: python3, node or npm missing");
        return;
    }
    let out = Command::new("bash")
        .arg(root().join("deploy/validate.sh"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
}
