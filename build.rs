//! Records the git commit the binary is built from, and whether the work
//! tree differed from it, for `--version` and the `nsqlookupd_build_info`
//! metric ("unknown" outside a git checkout), so that every figure can be
//! tied to the exact source that produced it.
//!
//! "Dirty" means `git status --porcelain` lists anything: a modified,
//! staged, deleted or untracked (not ignored) file. The script reruns when
//! the commit, the index or any source file changes, so the flag follows
//! edits without a clean build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"])
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = match git(&["status", "--porcelain"]) {
        _ if commit == "unknown" => "unknown",
        Some(s) if s.is_empty() => "false",
        Some(_) => "true",
        None => "unknown",
    };
    println!("cargo:rustc-env=NSQLOOKUPD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=NSQLOOKUPD_GIT_DIRTY={dirty}");
    for path in [
        ".git/HEAD",
        ".git/refs/heads",
        ".git/index",
        "src",
        "perf",
        "benches",
        "tests",
        "contrib",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "README.md",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
