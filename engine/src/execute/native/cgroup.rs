//! Detecting a delegated cgroup v2, the one containment a native run could add beyond its
//! reaper and rlimits: a per-run cgroup with `memory.max` (a resident-memory cap, which
//! `RLIMIT_AS` is not), `pids.max` and `cgroup.kill`.
//!
//! The host never requires one and does not use one yet; `absurd-host check` reports what it
//! finds, so an operator knows whether a systemd `Delegate=yes` unit would make it possible.

use std::path::{Path, PathBuf};

/// What the machine offers this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// A cgroup v2 directory this process may create children in, with the memory and pids
    /// controllers available to them.
    Delegated(PathBuf),
    /// Why not, in words.
    Unavailable(String),
}

/// Looks at `/proc/self/cgroup` and the cgroup v2 mount.
pub fn detect() -> Cgroup {
    detect_in(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup"))
}

fn detect_in(proc_cgroup: &Path, mount: &Path) -> Cgroup {
    let Ok(text) = std::fs::read_to_string(proc_cgroup) else {
        return Cgroup::Unavailable(format!("{} is not readable", proc_cgroup.display()));
    };
    // cgroup v2 alone is one line `0::<path>`; a v1 (or hybrid) host lists its v1 hierarchies.
    let v1 = text.lines().any(|l| !l.starts_with("0::"));
    let Some(own) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Cgroup::Unavailable("this host has no cgroup v2 hierarchy".into());
    };
    if v1 {
        return Cgroup::Unavailable(
            "this host uses cgroup v1 (v2 only as a hybrid mount without controllers)".into(),
        );
    }
    let dir = mount.join(own.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("memory") && has("pids")) {
        return Cgroup::Unavailable(format!(
            "the memory and pids controllers are not delegated to {}",
            dir.display()
        ));
    }
    let writable = |p: &Path| std::fs::OpenOptions::new().append(true).open(p).is_ok();
    if !writable(&dir.join("cgroup.subtree_control")) || !writable(&dir.join("cgroup.procs")) {
        return Cgroup::Unavailable(format!(
            "{} is not writable by this user (run under a unit with Delegate=yes)",
            dir.display()
        ));
    }
    Cgroup::Delegated(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hosts_and_missing_controllers_are_named() {
        let dir = std::env::temp_dir().join(format!("absurd-cg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("mnt/svc")).unwrap();
        let proc = dir.join("cgroup");
        std::fs::write(&proc, "9:name=systemd:/\n8:pids:/\n0::/\n").unwrap();
        assert!(
            matches!(detect_in(&proc, &dir.join("mnt")), Cgroup::Unavailable(m) if m.contains("v1"))
        );
        std::fs::write(&proc, "0::/svc\n").unwrap();
        std::fs::write(dir.join("mnt/svc/cgroup.controllers"), "cpu io\n").unwrap();
        assert!(
            matches!(detect_in(&proc, &dir.join("mnt")), Cgroup::Unavailable(m) if m.contains("not delegated"))
        );
        std::fs::write(dir.join("mnt/svc/cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(dir.join("mnt/svc/cgroup.subtree_control"), "").unwrap();
        std::fs::write(dir.join("mnt/svc/cgroup.procs"), "").unwrap();
        assert_eq!(
            detect_in(&proc, &dir.join("mnt")),
            Cgroup::Delegated(dir.join("mnt/svc"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
