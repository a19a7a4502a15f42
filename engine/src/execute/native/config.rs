//! The settings of a `kind = "native"` task type: its `[tasks.<name>]` keys over the `[native]`
//! defaults, checked when the host starts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key a native task type (or `[native]`) may set.
pub const KEYS: &[&str] = &[
    "program",
    "args",
    "env",
    "env_remove",
    "env_pass",
    "env_clear",
    "workdir_root",
    "keep_workdir",
    "grace",
    "cpu_seconds",
    "open_files",
    "memory_mb",
    "processes",
    "file_size_mb",
    "max_result_bytes",
    "log_tail_bytes",
    "max_log_bytes",
];

/// The placeholders allowed in `args` and `env` values: host-controlled values only.
pub const PLACEHOLDERS: &[&str] = &[
    "params",
    "workdir",
    "task_id",
    "run_id",
    "attempt",
    "task_name",
];

/// Environment variables kept from the host when `env_clear = true`.
pub const KEPT_WHEN_CLEARED: &[&str] = &["PATH", "HOME", "LANG"];

/// Host variables never passed to a program unless its task type names them in `env_pass`
/// (or sets them in `env`): the worker's own database URL and API token, and libpq's
/// password and the files and services that hold one. See also [`is_secret`].
pub const SECRET_VARS: &[&str] = &[
    "ABSURD_DATABASE_URL",
    "ABSURD_API_TOKEN",
    "DATABASE_URL",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
];

/// Parts of a variable name that mark it as a secret (case-insensitive).
pub const SECRET_MARKS: &[&str] = &["PASSWORD", "PASSWD", "TOKEN", "SECRET"];

/// Whether the host's variable `name` carries credentials and is withheld by default: one of
/// [`SECRET_VARS`], any other `ABSURD_…_URL` (a connection string), or a name containing
/// one of [`SECRET_MARKS`] (`GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `MYSQL_PASSWORD`, …).
pub fn is_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_VARS.contains(&upper.as_str())
        || (upper.starts_with("ABSURD_") && upper.ends_with("_URL"))
        || SECRET_MARKS.iter().any(|m| upper.contains(m))
}

/// Default `RLIMIT_NPROC` (`processes`): far above what a CASA run uses (a few hundred
/// threads with OpenMP on a large machine), low enough to stop a fork bomb. The kernel counts
/// it per real user over the whole machine, threads included, and does not enforce it for
/// root.
pub const DEFAULT_PROCESSES: u64 = 8192;
/// Default `RLIMIT_FSIZE` (`file_size_mb`): 64 GiB, larger than any single file a calibration
/// writes, and a stop for a runaway writer before it fills a disk of ordinary size.
pub const DEFAULT_FILE_SIZE_MB: u64 = 64 * 1024;

pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_LOG_TAIL_BYTES: usize = 8 * 1024;
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepWorkdir {
    Never,
    OnFailure,
    Always,
}

impl KeepWorkdir {
    pub fn keep(self, failed: bool) -> bool {
        match self {
            KeepWorkdir::Never => false,
            KeepWorkdir::OnFailure => failed,
            KeepWorkdir::Always => true,
        }
    }
}

/// Optional resource limits, set with `setrlimit` in the child before `exec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_CPU: SIGXCPU at this many CPU seconds, SIGKILL 5 s of CPU later.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_AS in MiB (address space, not resident memory).
    pub memory_mb: Option<u64>,
    /// RLIMIT_NPROC (processes and threads of the real user, machine-wide).
    pub processes: Option<u64>,
    /// RLIMIT_FSIZE in MiB (largest file the program may write; SIGXFSZ past it).
    pub file_size_mb: Option<u64>,
}

/// A host-controlled value that may appear in `args` and `env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Params,
    Workdir,
    TaskId,
    RunId,
    Attempt,
    TaskName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A string with `{placeholder}`s (`{{` and `}}` stand for literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

/// The values of the placeholders for one run.
#[derive(Debug, Clone)]
pub struct Vars {
    pub params: PathBuf,
    pub workdir: PathBuf,
    pub task_id: String,
    pub run_id: String,
    pub attempt: String,
    pub task_name: String,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!(
                            "unclosed `{{` in {text:?} (write `{{{{` for a literal brace)"
                        ));
                    }
                    let var = match name.as_str() {
                        "params" => Var::Params,
                        "workdir" => Var::Workdir,
                        "task_id" => Var::TaskId,
                        "run_id" => Var::RunId,
                        "attempt" => Var::Attempt,
                        "task_name" => Var::TaskName,
                        _ => {
                            return Err(format!(
                            "unknown placeholder `{{{name}}}` in {text:?}; the placeholders are {}",
                            PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        }
                    };
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(var));
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` in {text:?} (write `}}}}` for a literal brace)"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    pub fn expand(&self, vars: &Vars) -> OsString {
        let mut out = OsString::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push(s),
                Piece::Var(Var::Params) => out.push(&vars.params),
                Piece::Var(Var::Workdir) => out.push(&vars.workdir),
                Piece::Var(Var::TaskId) => out.push(&vars.task_id),
                Piece::Var(Var::RunId) => out.push(&vars.run_id),
                Piece::Var(Var::Attempt) => out.push(&vars.attempt),
                Piece::Var(Var::TaskName) => out.push(&vars.task_name),
            }
        }
        out
    }

    /// The text when the template holds no placeholder.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }
}

/// A checked native task type.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// Absolute path of the program.
    pub program: PathBuf,
    pub args: Vec<Template>,
    /// Additions, in name order (the `[native]` ones, then the task's, which win).
    pub env: BTreeMap<String, Template>,
    pub env_remove: Vec<String>,
    /// Secrets of the host's environment passed on all the same.
    pub env_pass: Vec<String>,
    pub env_clear: bool,
    pub workdir_root: PathBuf,
    pub keep_workdir: KeepWorkdir,
    /// SIGTERM goes out this long before a timeout's deadline (capped at half the timeout;
    /// SIGKILL at the deadline), and this long before SIGKILL for any other stop.
    pub grace: Duration,
    pub limits: Limits,
    pub max_result_bytes: u64,
    pub log_tail_bytes: usize,
    pub max_log_bytes: u64,
}

fn check_keys(table: &toml::Table, origin: &str) -> Result<(), String> {
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown key `{key}` {origin} for kind = \"native\"; the keys are {}",
                KEYS.join(", ")
            ));
        }
    }
    Ok(())
}

fn positive_int(key: &str, v: &toml::Value) -> Result<u64, String> {
    match v.as_integer() {
        Some(n) if n > 0 => Ok(n as u64),
        _ => Err(format!("`{key}` must be a positive integer, got {v}")),
    }
}

fn string_list(key: &str, v: &toml::Value) -> Result<Vec<String>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list of strings, got {v}"))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` must be a list of strings; {x} is not a string"))
        })
        .collect()
}

fn env_table(v: &toml::Value) -> Result<BTreeMap<String, Template>, String> {
    let t = v
        .as_table()
        .ok_or_else(|| format!("`env` must be a table of strings, got {v}"))?;
    let mut out = BTreeMap::new();
    for (k, x) in t {
        valid_env_name(k).map_err(|e| format!("`env`: {e}"))?;
        let s = x
            .as_str()
            .ok_or_else(|| format!("`env.{k}` must be a string, got {x}"))?;
        if s.contains('\0') {
            return Err(format!("`env.{k}` contains a NUL byte"));
        }
        out.insert(
            k.clone(),
            Template::parse(s).map_err(|e| format!("`env.{k}`: {e}"))?,
        );
    }
    Ok(out)
}

fn valid_env_name(k: &str) -> Result<(), String> {
    if k.is_empty() || k.contains('=') || k.contains('\0') {
        return Err(format!("{k:?} is not a valid environment variable name"));
    }
    Ok(())
}

/// Directories only the host's user can enter (0700): work directories hold the params, the
/// result and the logs of a run.
pub fn private_dir_builder() -> std::fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    b
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

fn resolve_program(
    program: &str,
    base_dir: &Path,
    path_var: Option<OsString>,
) -> Result<PathBuf, String> {
    if program.is_empty() {
        return Err("`program` must not be empty".into());
    }
    if program.contains('/') {
        let p = Path::new(program);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        };
        let p = std::path::absolute(&p).unwrap_or(p);
        if !p.exists() {
            return Err(format!("program {} does not exist", p.display()));
        }
        if !is_executable(&p) {
            return Err(format!("program {} is not an executable file", p.display()));
        }
        return Ok(p);
    }
    let path_var = path_var.unwrap_or_default();
    for dir in std::env::split_paths(&path_var) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let cand = dir.join(program);
        if is_executable(&cand) {
            return Ok(std::path::absolute(&cand).unwrap_or(cand));
        }
    }
    Err(format!(
        "program `{program}` was not found on PATH ({})",
        path_var.to_string_lossy()
    ))
}

impl NativeConfig {
    /// Checks a task type's keys over the `[native]` defaults. Relative paths (a `program` with
    /// a slash, `workdir_root`) are relative to `base_dir`, the configuration file's directory.
    pub fn from_tables(
        table: &toml::Table,
        defaults: &toml::Table,
        base_dir: &Path,
    ) -> Result<NativeConfig, String> {
        check_keys(defaults, "in [native]")?;
        check_keys(table, "")?;
        // `env` and `env_remove` add up; every other key of the task replaces the default.
        let mut env = match defaults.get("env") {
            Some(v) => env_table(v).map_err(|e| format!("[native]: {e}"))?,
            None => BTreeMap::new(),
        };
        if let Some(v) = table.get("env") {
            env.extend(env_table(v)?);
        }
        let names = |key: &str| -> Result<Vec<String>, String> {
            let mut out: Vec<String> = Vec::new();
            for (t, origin) in [(defaults, "[native]: "), (table, "")] {
                if let Some(v) = t.get(key) {
                    for k in string_list(key, v).map_err(|e| format!("{origin}{e}"))? {
                        valid_env_name(&k).map_err(|e| format!("{origin}`{key}`: {e}"))?;
                        if !out.contains(&k) {
                            out.push(k);
                        }
                    }
                }
            }
            Ok(out)
        };
        let env_remove = names("env_remove")?;
        let env_pass = names("env_pass")?;
        let get = |key: &str| -> Option<(&toml::Value, &'static str)> {
            table
                .get(key)
                .map(|v| (v, ""))
                .or_else(|| defaults.get(key).map(|v| (v, "[native]: ")))
        };

        let env_clear = match get("env_clear") {
            None => false,
            Some((v, o)) => v
                .as_bool()
                .ok_or_else(|| format!("{o}`env_clear` must be true or false, got {v}"))?,
        };

        let program = match get("program") {
            None => return Err("`program` is required for kind = \"native\"".into()),
            Some((v, o)) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("{o}`program` must be a string, got {v}"))?;
                if s.contains('{') {
                    return Err(format!("{o}`program` takes no placeholders, got {s:?}"));
                }
                // A bare name is looked up on the PATH the child will get.
                let path_var = match env.get("PATH").and_then(Template::literal) {
                    Some(p) => Some(OsString::from(p)),
                    None if env_remove.iter().any(|k| k == "PATH") => None,
                    None => std::env::var_os("PATH"),
                };
                resolve_program(s, base_dir, path_var).map_err(|e| format!("{o}{e}"))?
            }
        };

        let args = match get("args") {
            None => Vec::new(),
            Some((v, o)) => string_list("args", v)
                .and_then(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, a)| {
                            if a.contains('\0') {
                                return Err(format!("`args[{i}]` contains a NUL byte"));
                            }
                            Template::parse(a).map_err(|e| format!("`args[{i}]`: {e}"))
                        })
                        .collect()
                })
                .map_err(|e| format!("{o}{e}"))?,
        };

        let workdir_root = match get("workdir_root") {
            // Per user: a directory another user created first would not be writable.
            None => std::env::temp_dir()
                .join(format!("absurd-host-native-{}", unsafe { libc::geteuid() })),
            Some((v, o)) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("{o}`workdir_root` must be a string, got {v}"))?;
                if s.is_empty() {
                    return Err(format!("{o}`workdir_root` must not be empty"));
                }
                let p = Path::new(s);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base_dir.join(p)
                }
            }
        };
        // Private: the work directories below it hold params and results.
        private_dir_builder()
            .recursive(true)
            .create(&workdir_root)
            .map_err(|e| format!("cannot create workdir_root {}: {e}", workdir_root.display()))?;
        let workdir_root = std::path::absolute(&workdir_root).unwrap_or(workdir_root);

        let keep_workdir = match get("keep_workdir") {
            None => KeepWorkdir::OnFailure,
            Some((v, o)) => match v.as_str() {
                Some("never") => KeepWorkdir::Never,
                Some("on-failure") => KeepWorkdir::OnFailure,
                Some("always") => KeepWorkdir::Always,
                _ => {
                    return Err(format!(
                        "{o}`keep_workdir` must be \"never\", \"on-failure\" or \"always\", got {v}"
                    ))
                }
            },
        };

        let grace = match get("grace") {
            None => DEFAULT_GRACE,
            Some((v, o)) => {
                let secs = v
                    .as_float()
                    .or_else(|| v.as_integer().map(|i| i as f64))
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| {
                        format!(
                            "{o}`grace` must be a number of seconds between 0 and 86400, got {v}"
                        )
                    })?;
                Duration::from_secs_f64(secs)
            }
        };

        let int = |key: &str| -> Result<Option<u64>, String> {
            match get(key) {
                None => Ok(None),
                Some((v, o)) => positive_int(key, v)
                    .map(Some)
                    .map_err(|e| format!("{o}{e}")),
            }
        };
        // A limit with a default: a positive integer, or "unlimited" to set none.
        let defaulted = |key: &str, default: u64| -> Result<Option<u64>, String> {
            match get(key) {
                None => Ok(Some(default)),
                Some((v, _)) if v.as_str() == Some("unlimited") => Ok(None),
                Some((v, o)) => positive_int(key, v).map(Some).map_err(|_| {
                    format!("{o}`{key}` must be a positive integer or \"unlimited\", got {v}")
                }),
            }
        };
        let limits = Limits {
            cpu_seconds: int("cpu_seconds")?,
            open_files: int("open_files")?,
            memory_mb: int("memory_mb")?,
            processes: defaulted("processes", DEFAULT_PROCESSES)?,
            file_size_mb: defaulted("file_size_mb", DEFAULT_FILE_SIZE_MB)?,
        };
        if let Some(n) = limits.processes {
            if n < 16 {
                return Err(format!("`processes` must be at least 16, got {n}"));
            }
        }
        if let Some(n) = limits.open_files {
            if n < 16 {
                return Err(format!("`open_files` must be at least 16, got {n}"));
            }
        }
        let max_result_bytes = int("max_result_bytes")?.unwrap_or(DEFAULT_MAX_RESULT_BYTES);
        let log_tail_bytes = int("log_tail_bytes")?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_LOG_TAIL_BYTES);
        if log_tail_bytes > 1024 * 1024 {
            return Err(format!(
                "`log_tail_bytes` must be at most 1048576, got {log_tail_bytes}"
            ));
        }
        let max_log_bytes = int("max_log_bytes")?.unwrap_or(DEFAULT_MAX_LOG_BYTES);

        Ok(NativeConfig {
            program,
            args,
            env,
            env_remove,
            env_pass,
            env_clear,
            workdir_root,
            keep_workdir,
            grace,
            limits,
            max_result_bytes,
            log_tail_bytes,
            max_log_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name() {
        for name in [
            "ABSURD_DATABASE_URL",
            "ABSURD_API_TOKEN",
            "absurd_database_url",
            "ABSURD_OTHER_URL",
            "DATABASE_URL",
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSERVICEFILE",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "MYSQL_PWD_PASSWD",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "ABSURD_CASA_VENV",
            "ABSURD_LOG",
            "PGHOST",
            "PGUSER",
            "LANG",
        ] {
            assert!(!is_secret(name), "{name}");
        }
    }

    #[test]
    fn limits_with_defaults_can_be_changed_or_lifted() {
        let dir = std::env::temp_dir();
        let d = table("processes = 500\n");
        let t =
            table("program = \"sh\"\nfile_size_mb = \"unlimited\"\nenv_pass = [\"PGPASSWORD\"]\n");
        let c = NativeConfig::from_tables(&t, &d, &dir).unwrap();
        assert_eq!(c.limits.processes, Some(500));
        assert_eq!(c.limits.file_size_mb, None);
        assert_eq!(c.env_pass, vec!["PGPASSWORD".to_string()]);
    }

    fn vars() -> Vars {
        Vars {
            params: "/w/params.json".into(),
            workdir: "/w".into(),
            task_id: "T".into(),
            run_id: "R".into(),
            attempt: "2".into(),
            task_name: "calibration-solve".into(),
        }
    }

    #[test]
    fn templates_expand_host_values_only() {
        let t = Template::parse("--params={params}").unwrap();
        assert_eq!(t.expand(&vars()), "--params=/w/params.json");
        let t = Template::parse("{task_name}:{task_id}:{run_id}:{attempt}@{workdir}").unwrap();
        assert_eq!(t.expand(&vars()), "calibration-solve:T:R:2@/w");
        let t = Template::parse("{{literal}} }}").unwrap();
        assert_eq!(t.expand(&vars()), "{literal} }");
        assert_eq!(t.literal(), Some("{literal} }"));
        let e = Template::parse("{ms_path}").unwrap_err();
        assert!(e.contains("unknown placeholder `{ms_path}`"), "{e}");
        assert!(Template::parse("{params").unwrap_err().contains("unclosed"));
        assert!(Template::parse("a}b").unwrap_err().contains("unmatched"));
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let dir = std::env::temp_dir();
        let d = table("grace = 3\nenv = { A = \"1\", B = \"2\" }\nenv_remove = [\"X\"]\nkeep_workdir = \"always\"\n");
        let t = table(
            "program = \"sh\"\nargs = [\"-c\", \"{params}\"]\nenv = { B = \"3\" }\nenv_remove = [\"Y\"]\ngrace = 0.5\ncpu_seconds = 7\n",
        );
        let c = NativeConfig::from_tables(&t, &d, &dir).unwrap();
        assert!(
            c.program.is_absolute() && c.program.ends_with("sh"),
            "{:?}",
            c.program
        );
        assert_eq!(c.grace, Duration::from_millis(500));
        assert_eq!(c.keep_workdir, KeepWorkdir::Always);
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.env["B"].literal(), Some("3"));
        assert_eq!(c.env_remove, vec!["X".to_string(), "Y".to_string()]);
        assert_eq!(c.limits.cpu_seconds, Some(7));
        assert_eq!(c.limits.processes, Some(DEFAULT_PROCESSES));
        assert_eq!(c.limits.file_size_mb, Some(DEFAULT_FILE_SIZE_MB));
        assert!(c.env_pass.is_empty());
        assert_eq!(c.max_result_bytes, DEFAULT_MAX_RESULT_BYTES);
        assert_eq!(c.log_tail_bytes, DEFAULT_LOG_TAIL_BYTES);
    }

    #[test]
    fn mistakes_are_named() {
        let dir = std::env::temp_dir();
        let none = toml::Table::new();
        let err = |t: &str| NativeConfig::from_tables(&table(t), &none, &dir).unwrap_err();
        assert!(err("program = \"sh\"\nprogramme = 1").contains("unknown key `programme`"));
        assert!(err("args = []").contains("`program` is required"));
        assert!(err("program = \"./no/such/program\"").contains("does not exist"));
        assert!(err("program = \"no-such-program-xyz\"").contains("not found on PATH"));
        let plain = dir.join(format!(
            "native-config-{}.txt",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&plain, "not a program").unwrap();
        assert!(err(&format!("program = \"{}\"", plain.display())).contains("not an executable"));
        std::fs::remove_file(&plain).unwrap();
        assert!(err("program = \"sh\"\nargs = [\"{secret}\"]")
            .contains("unknown placeholder `{secret}`"));
        assert!(err("program = \"sh\"\nkeep_workdir = \"sometimes\"").contains("keep_workdir"));
        assert!(err("program = \"sh\"\ngrace = -1").contains("grace"));
        assert!(err("program = \"sh\"\nmemory_mb = 0")
            .contains("`memory_mb` must be a positive integer"));
        assert!(err("program = \"sh\"\nenv = { A = 1 }").contains("`env.A` must be a string"));
        let e = err("program = \"sh\"\nprocesses = -3");
        assert!(
            e.contains("`processes` must be a positive integer or \"unlimited\", got -3"),
            "{e}"
        );
        let e = err("program = \"sh\"\nfile_size_mb = \"lots\"");
        assert!(
            e.contains("`file_size_mb`") && e.contains("\"lots\""),
            "{e}"
        );
        assert!(err("program = \"sh\"\nprocesses = 3")
            .contains("`processes` must be at least 16, got 3"));
        assert!(err("program = \"sh\"\nenv_pass = [\"A=B\"]").contains("`env_pass`"));
        let e = NativeConfig::from_tables(&table("program = \"sh\""), &table("colour = 1"), &dir)
            .unwrap_err();
        assert!(e.contains("unknown key `colour` in [native]"), "{e}");
    }
}
