//! Build-time facts for `producer --version` and `consumer --version`: the
//! git commit the binaries were built from and the target they run on.
//!
//! The commit comes from `MYKAFKAMS_GIT_COMMIT` when set (a container build
//! has no `.git`: docker/Dockerfile passes it as a build argument), else
//! from `git rev-parse`, else it is `unknown` (a build from a source
//! tarball). Nothing here fails the build.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MYKAFKAMS_GIT_COMMIT");
    // A new commit moves HEAD or the branch it points at.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }
    let commit = std::env::var("MYKAFKAMS_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MYKAFKAMS_GIT_COMMIT={}", commit.trim());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=MYKAFKAMS_TARGET={target}");
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
}
