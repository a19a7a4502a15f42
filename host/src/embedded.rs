//! A private PostgreSQL cluster for development: `absurd-host dev` and `absurd-host demo` run
//! one when no database URL is given.
//!
//! The cluster is made from the PostgreSQL server binaries already on the machine (`initdb`,
//! `pg_ctl`, `postgres`: on `PATH`, under `/usr/lib/postgresql/*/bin` and the other standard
//! install locations, or in `ABSURD_PG_BIN_DIR`; the newest version wins). It lives in a data
//! directory chosen by the caller and reuses it on the next start.
//!
//! Only the user who runs absurd-host can connect. The server listens on no TCP port at all
//! (`listen_addresses = ''`), only on a Unix socket in a private directory (mode 0700: the
//! `socket` directory inside the data directory, or a short private directory under
//! `$XDG_RUNTIME_DIR` or `/tmp` when that path is too long for a socket), and `pg_hba.conf`
//! allows nothing but `peer` authentication of that one user. Any other account on the
//! machine can neither reach the socket nor pass `peer` (a superuser can run programs
//! through `COPY ... TO PROGRAM`, so "any local user" must never mean "superuser"). A data
//! directory made by an older absurd-host (TCP with `trust`) is rewritten to this on start.
//!
//! PostgreSQL refuses to run as root. When absurd-host runs as root, the server programs run
//! as the `postgres` system user, which then owns the data directory; the client (root) still
//! logs in as the database user `root` through `peer`.
//!
//! The cluster is only ever one this module started: every `pg_ctl` call names our data
//! directory, an exclusive lock (`<data dir>.lock`) keeps two absurd-host processes from
//! sharing one, and a server left running by a crashed run is recognised through its
//! `postmaster.pid` before it is stopped.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// How long `pg_ctl` may take to start or stop the server.
const PG_CTL_WAIT_SECS: u32 = 60;
/// The database absurd-host uses in the cluster.
pub const DATABASE: &str = "absurd";
/// Written into the data directory: the superuser of the cluster.
const STATE_FILE: &str = "absurd-host.state";
/// The port number in the socket's name (`.s.PGSQL.5432`). No TCP port is opened: the
/// socket lives in a private directory, so the system cluster's number cannot clash.
const SOCKET_PORT: u16 = 5432;
/// The longest Unix socket path (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The `pg_ident.conf` map that lets the OS user running absurd-host in as the superuser.
const IDENT_MAP: &str = "absurd-host";
/// Included from `postgresql.conf`, rewritten before every start.
const SETTINGS_FILE: &str = "absurd-host.conf";
/// The server log, in the data directory.
const LOG_FILE: &str = "server.log";

/// An error of the embedded cluster, saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("{0}")]
    NoBinaries(String),
    #[error("{0}")]
    Setup(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
}

type Result<T> = std::result::Result<T, EmbeddedError>;

fn setup(msg: impl Into<String>) -> EmbeddedError {
    EmbeddedError::Setup(msg.into())
}

// ---- finding the server programs ------------------------------------------------------------

/// A directory holding `initdb`, `pg_ctl` and `postgres` of one PostgreSQL version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
    /// The full version, e.g. `15.20`.
    pub version: String,
    /// The major version, e.g. `15`.
    pub major: u32,
}

impl PgBinaries {
    fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Fixed directories that may hold PostgreSQL server programs (besides `PATH` and the
/// versioned ones of [`versioned_dirs`]).
const STANDARD_DIRS: &[&str] = &["/usr/local/pgsql/bin", "/usr/lib64/pgsql/bin"];

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

/// `<root>/<name>/<sub>` for every entry of `root` whose name starts with `prefix`.
fn children(root: &str, prefix: &str, sub: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return vec![];
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path().join(sub))
        .collect()
}

/// One directory per installed version: Debian/Ubuntu (`/usr/lib/postgresql/15/bin`), the
/// PGDG RPMs (`/usr/pgsql-15/bin`), Homebrew (`/opt/homebrew/opt/postgresql@15/bin`).
fn versioned_dirs() -> Vec<PathBuf> {
    let mut v = children("/usr/lib/postgresql", "", "bin");
    v.extend(children("/usr", "pgsql-", "bin"));
    v.extend(children("/opt/homebrew/opt", "postgresql@", "bin"));
    v.extend(children("/usr/local/opt", "postgresql@", "bin"));
    v
}

/// Candidate directories, in no particular order, without duplicates (symlinks resolved).
fn candidate_dirs(path_var: Option<OsString>, extra: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut push = |d: PathBuf| {
        let d = std::fs::canonicalize(&d).unwrap_or(d);
        if has_programs(&d) && !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Some(path) = path_var {
        for entry in std::env::split_paths(&path) {
            // `/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl`: use the real
            // directory, where the programs of one version sit together.
            if let Ok(real) = std::fs::canonicalize(entry.join("pg_ctl")) {
                if let Some(parent) = real.parent() {
                    push(parent.to_path_buf());
                }
            }
        }
    }
    for d in extra {
        push(d);
    }
    dirs
}

/// `postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` → `15.20`.
fn parse_version(text: &str) -> Option<String> {
    let after = text.split(')').nth(1)?.trim();
    let v: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (!v.is_empty()).then_some(v)
}

fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn probe(dir: &Path) -> Option<PgBinaries> {
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let version = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    let major = version_key(&version)[0];
    Some(PgBinaries {
        dir: dir.to_path_buf(),
        version,
        major,
    })
}

/// The install command for this system's PostgreSQL server package.
pub fn install_hint() -> String {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    install_hint_for(&os_release, cfg!(target_os = "macos"))
}

fn install_hint_for(os_release: &str, macos: bool) -> String {
    if macos {
        return "`brew install postgresql@16`".into();
    }
    let field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let id = field("ID").to_ascii_lowercase();
    let like = field("ID_LIKE").to_ascii_lowercase();
    let is = |name: &str| id == name || like.split_whitespace().any(|l| l == name);
    if is("debian") || is("ubuntu") {
        let pretty = field("PRETTY_NAME");
        let on = if pretty.is_empty() {
            String::new()
        } else {
            format!(" (on {pretty})")
        };
        format!("`sudo apt-get install postgresql`{on}")
    } else if is("fedora") || is("rhel") || is("centos") {
        "`sudo dnf install postgresql-server`".into()
    } else if is("alpine") {
        "`sudo apk add postgresql`".into()
    } else if is("arch") {
        "`sudo pacman -S postgresql`".into()
    } else if is("suse") || is("opensuse") {
        "`sudo zypper install postgresql-server`".into()
    } else {
        "install your distribution's PostgreSQL server package (e.g. `apt-get install postgresql` on Debian/Ubuntu)".into()
    }
}

/// Finds the PostgreSQL server programs, newest version first, preferring `major` when given
/// (the version that made an existing data directory).
pub fn find_binaries(major: Option<u32>) -> Result<PgBinaries> {
    if let Some(dir) = std::env::var_os("ABSURD_PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if !has_programs(&dir) {
            return Err(EmbeddedError::NoBinaries(format!(
                "ABSURD_PG_BIN_DIR={} does not hold initdb, pg_ctl and postgres; point it at the \
                 `bin` directory of a PostgreSQL server install (e.g. /usr/lib/postgresql/15/bin)",
                dir.display()
            )));
        }
        return probe(&dir).ok_or_else(|| {
            EmbeddedError::NoBinaries(format!("{}/postgres --version did not work", dir.display()))
        });
    }
    let mut extra = versioned_dirs();
    extra.extend(STANDARD_DIRS.iter().map(PathBuf::from));
    let found: Vec<PgBinaries> = candidate_dirs(std::env::var_os("PATH"), extra)
        .iter()
        .filter_map(|d| probe(d))
        .collect();
    choose(found, major)
}

/// The newest of `found`, or the one of version `major`; errors say what to install.
fn choose(mut found: Vec<PgBinaries>, major: Option<u32>) -> Result<PgBinaries> {
    found.sort_by_key(|b| std::cmp::Reverse(version_key(&b.version)));
    if found.is_empty() {
        return Err(EmbeddedError::NoBinaries(format!(
            "no PostgreSQL server programs (initdb, pg_ctl, postgres) were found on PATH or in \
             /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin. Without a database \
             URL absurd-host runs a private PostgreSQL cluster from them. Install them with \
             {}, or set ABSURD_PG_BIN_DIR to their directory, or use an existing database with \
             --database-url / ABSURD_DATABASE_URL",
            install_hint()
        )));
    }
    if let Some(m) = major {
        if let Some(b) = found.iter().find(|b| b.major == m) {
            return Ok(b.clone());
        }
        let have: Vec<String> = found
            .iter()
            .map(|b| format!("{} ({})", b.version, b.dir.display()))
            .collect();
        return Err(EmbeddedError::NoBinaries(format!(
            "the data directory was made by PostgreSQL {m}, but only {} is installed; install \
             PostgreSQL {m}'s server package, or delete the data directory to start afresh",
            have.join(", ")
        )));
    }
    Ok(found.swap_remove(0))
}

// ---- running as the right user ----------------------------------------------------------------

/// The system user the server runs as when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = std::ffi::CString::new(name).ok()?;
    // libc: the user database (NSS) is libc's; neither rustix nor std reads it.
    // SAFETY: a passwd struct is plain integers and pointers, for which all zeroes is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, which outlive the call.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(RunAs {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn current_user_name() -> Option<String> {
    let uid = rustix::process::geteuid().as_raw();
    // libc: as in `lookup_user`.
    // SAFETY: as in `lookup_user`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The database superuser: the name of the user running absurd-host when it is a plain
/// identifier, else `absurd`.
fn default_superuser() -> String {
    current_user_name()
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 63
                && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .unwrap_or_else(|| "absurd".into())
}

fn chown(path: &Path, who: &RunAs) -> Result<()> {
    std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid)).map_err(|e| {
        setup(format!(
            "cannot give {} to the {} user: {e}",
            path.display(),
            who.name
        ))
    })
}

fn chown_tree(path: &Path, who: &RunAs) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| setup(format!("{}: {e}", path.display())))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.uid() != who.uid || meta.gid() != who.gid {
        chown(path, who)?;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path).map_err(|e| setup(format!("{}: {e}", path.display())))? {
            let e = e.map_err(|e| setup(format!("{}: {e}", path.display())))?;
            chown_tree(&e.path(), who)?;
        }
    }
    Ok(())
}

/// Checks that `who` can reach `dir` (search permission on every ancestor).
fn check_reachable(dir: &Path, who: &RunAs) -> Result<()> {
    for anc in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(anc) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let ok = if meta.uid() == who.uid {
            mode & 0o100 != 0
        } else if meta.gid() == who.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(setup(format!(
                "PostgreSQL runs as the `{}` user (it refuses to run as root), which cannot enter {} \
                 (mode {:o}); choose a data directory it can reach with --data-dir (e.g. under \
                 /var/tmp), or run absurd-host as a normal user",
                who.name,
                anc.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

// ---- the cluster ------------------------------------------------------------------------------

#[derive(Debug)]
struct Inner {
    bins: PgBinaries,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    superuser: String,
    run_as: Option<RunAs>,
    state: Mutex<RunState>,
}

#[derive(Debug)]
struct RunState {
    running: bool,
}

/// A private PostgreSQL cluster, stopped when dropped.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    inner: Arc<Inner>,
    /// The exclusive lock on `<data dir>.lock`, held while this value lives.
    _lock: File,
}

/// Stops the cluster from elsewhere (a signal handler), without owning it.
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<Inner>);

impl StopHandle {
    /// `pg_ctl stop -m fast`; a no-op if the cluster is not running.
    pub fn stop(&self) {
        if let Err(e) = self.0.stop_mode("fast") {
            warn!(error = %e, "cannot stop the embedded PostgreSQL cluster");
        }
    }
}

fn read_state(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(STATE_FILE)).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("superuser="))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The path of the socket file in `dir`.
fn socket_path(dir: &Path) -> PathBuf {
    dir.join(format!(".s.PGSQL.{SOCKET_PORT}"))
}

fn fits_socket_limit(dir: &Path) -> bool {
    socket_path(dir).as_os_str().len() <= MAX_SOCKET_PATH
}

/// Where the socket lives: `<data dir>/socket` (private because the data directory is), or,
/// when that path is too long for a socket, a short private directory of our own under
/// `$XDG_RUNTIME_DIR` (only when the server runs as us: root's runtime directory is closed to
/// the `postgres` user) or `/tmp`. `tag` tells data directories apart.
fn choose_socket_dir(
    data_dir: &Path,
    runtime_dir: Option<PathBuf>,
    uid: u32,
    tag: &str,
) -> Result<PathBuf> {
    let mut candidates = vec![data_dir.join("socket")];
    if let Some(rt) = runtime_dir.filter(|d| d.is_absolute()) {
        candidates.push(rt.join(format!("absurd-pg-{tag}")));
    }
    candidates.push(PathBuf::from(format!("/tmp/absurd-pg-{uid}-{tag}")));
    candidates
        .into_iter()
        .find(|d| fits_socket_limit(d))
        .ok_or_else(|| {
            setup(format!(
                "no directory for the PostgreSQL socket fits the {MAX_SOCKET_PATH}-byte limit of a \
                 socket path (tried under {} and /tmp)",
                data_dir.display()
            ))
        })
}

/// `value` percent-encoded for a URL query (the socket directory in `?host=`): `/`, letters,
/// digits and `-_.~` stay as they are.
fn query_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A user name for `pg_hba.conf` / `pg_ident.conf`, double-quoted. Those files have no way
/// to write a `"` or a line break inside a name, so such names are refused.
fn conf_quote(what: &str, name: &str) -> Result<String> {
    if name.is_empty() || name.contains('"') || name.chars().any(char::is_control) {
        return Err(setup(format!(
            "the {what} name {name:?} cannot be written into pg_hba.conf (empty, or holds a \
             quote or a control character); run absurd-host as another user or give a \
             database URL with --database-url"
        )));
    }
    Ok(format!("\"{name}\""))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `f` on a fresh thread with its own single-threaded runtime (so that this module's
/// blocking API works inside or outside of a tokio runtime).
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f)
    })
    .join()
    .expect("the database set-up thread panicked")
}

fn is_postgres_process(pid: i32) -> bool {
    // `<pid> (<comm>) <state> ...`: the postmaster's command name is `postgres` (or
    // `postmaster` on old installs); a zombie (Z) or dead (X) process is not running.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next().unwrap_or('X');
    (comm.starts_with("postgres") || comm.starts_with("postmaster")) && !matches!(state, 'Z' | 'X')
}

impl Inner {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.program(program));
        // Our own settings only: the caller's PG* variables (PGDATA, PGPORT, ...) must not
        // redirect these programs to another cluster.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&k);
            }
        }
        cmd.current_dir("/").stdin(Stdio::null());
        if let Some(who) = &self.run_as {
            // std drops the supplementary groups too when switching from root.
            cmd.uid(who.uid).gid(who.gid);
            cmd.env("USER", &who.name).env("LOGNAME", &who.name);
        }
        cmd
    }

    fn run(&self, what: &str, mut cmd: Command) -> Result<Output> {
        let out = cmd.output().map_err(|e| EmbeddedError::Command {
            what: what.into(),
            detail: format!("cannot run {:?}: {e}", cmd.get_program()),
        })?;
        Ok(out)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args(args);
        cmd
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    fn failure(&self, what: &str, out: &Output) -> EmbeddedError {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let log = tail(&self.log_path(), 15);
        if !log.is_empty() {
            detail.push_str(&format!(
                "\nlast lines of {}:\n{log}",
                self.log_path().display()
            ));
        }
        EmbeddedError::Command {
            what: what.into(),
            detail,
        }
    }

    /// `pg_ctl status`: the postmaster's pid when a server runs on our data directory.
    fn status(&self) -> Result<Option<i32>> {
        let out = self.run("pg_ctl status", self.pg_ctl(&["status"]))?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "pg_ctl: server is running (PID: 1234)"
        let pid = text.split("PID:").nth(1).and_then(|r| {
            let digits: String = r
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        });
        Ok(pid)
    }

    fn write_file(&self, name: &str, text: &str) -> Result<()> {
        let path = self.data_dir.join(name);
        let mut f = File::create(&path)
            .map_err(|e| setup(format!("cannot write {}: {e}", path.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| setup(format!("cannot write {}: {e}", path.display())))?;
        if let Some(who) = &self.run_as {
            chown(&path, who)?;
        }
        Ok(())
    }

    /// The settings and the authentication files, rewritten before every start so that a data
    /// directory made by an older absurd-host (TCP with `trust`) is brought up to date too.
    fn write_settings(&self) -> Result<()> {
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        self.write_file(
            SETTINGS_FILE,
            &format!(
                "# Written by absurd-host before every start; edit postgresql.conf instead.\n\
                 # No TCP at all: the Unix socket in a private directory is the only way in.\n\
                 listen_addresses = ''\n\
                 port = {SOCKET_PORT}\n\
                 unix_socket_directories = '{}'\n\
                 unix_socket_permissions = 0700\n",
                quote(&self.socket_dir)
            ),
        )?;
        self.write_file(STATE_FILE, &format!("superuser={}\n", self.superuser))?;
        self.write_auth()
    }

    /// `pg_hba.conf`: only the superuser, only over the socket, only through `peer`;
    /// `pg_ident.conf` maps the OS user running absurd-host to it (their names may differ).
    fn write_auth(&self) -> Result<()> {
        let os_user = current_user_name().ok_or_else(|| {
            setup(format!(
                "user id {} has no name in the user database, which PostgreSQL's peer \
                 authentication needs; run absurd-host as a named user or give a database URL \
                 with --database-url",
                rustix::process::geteuid().as_raw()
            ))
        })?;
        let os_user = conf_quote("user", &os_user)?;
        let db_user = conf_quote("database user", &self.superuser)?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba_path).unwrap_or_default();
        if old
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("trust"))
        {
            warn!(data_dir = %self.data_dir.display(), "this data directory let local users in over TCP with `trust`; switching it to its Unix socket with `peer` authentication");
        }
        self.write_file(
            "pg_hba.conf",
            &format!(
                "# Written by absurd-host before every start. Only the user running absurd-host,\n\
                 # only over the private Unix socket, identified by the kernel (peer).\n\
                 # TYPE  DATABASE  USER  METHOD\n\
                 local   all       {db_user}  peer map={IDENT_MAP}\n"
            ),
        )?;
        self.write_file(
            "pg_ident.conf",
            &format!(
                "# Written by absurd-host before every start.\n\
                 # MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n\
                 {IDENT_MAP}  {os_user}  {db_user}\n"
            ),
        )
    }

    /// Creates the socket directory, or checks the one left by an earlier start: a real
    /// directory (not a symlink) owned by the server's user, so that nobody else can have
    /// prepared it (the `/tmp` fallback has a predictable name).
    fn ensure_socket_dir(&self) -> Result<()> {
        let d = &self.socket_dir;
        let server_uid = self
            .run_as
            .as_ref()
            .map(|w| w.uid)
            .unwrap_or_else(|| rustix::process::geteuid().as_raw());
        match std::fs::symlink_metadata(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(d)
                    .map_err(|e| setup(format!("cannot create {}: {e}", d.display())))?;
                if let Some(who) = &self.run_as {
                    chown(d, who)?;
                }
            }
            Err(e) => return Err(setup(format!("cannot inspect {}: {e}", d.display()))),
            Ok(meta) => {
                if !meta.is_dir() || meta.uid() != server_uid {
                    return Err(setup(format!(
                        "{} (the private socket directory of this cluster) exists but is not a \
                         directory owned by user id {server_uid}; remove it (someone else may have \
                         made it) and start again",
                        d.display()
                    )));
                }
            }
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup(format!("cannot make {} private: {e}", d.display())))
    }

    fn initdb(&self) -> Result<()> {
        info!(data_dir = %self.data_dir.display(), version = %self.bins.version, "creating a PostgreSQL cluster");
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "--encoding=UTF8",
                "--no-locale",
                "--auth-local=peer",
                "--auth-host=reject",
                "--no-instructions",
            ])
            .arg(format!("--username={}", self.superuser));
        let out = self.run("initdb", cmd)?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                what: "initdb".into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let conf = self.data_dir.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| setup(format!("cannot open {}: {e}", conf.display())))?;
        writeln!(
            f,
            "\n# absurd-host: socket and addresses\ninclude_if_exists = '{SETTINGS_FILE}'"
        )
        .map_err(|e| setup(format!("cannot write {}: {e}", conf.display())))?;
        Ok(())
    }

    /// Starts the server. `listen_addresses` is also given on the command line, where it
    /// overrides every configuration file (`ALTER SYSTEM` included): no TCP, whatever they say.
    fn start_server(&self) -> Result<()> {
        self.ensure_socket_dir()?;
        self.write_settings()?;
        let wait = PG_CTL_WAIT_SECS.to_string();
        // pg_ctl hands `-o` to a shell: `''` is the empty value.
        let mut cmd = self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            &wait,
            "-s",
            "-o",
            "-c listen_addresses=''",
            "-l",
        ]);
        cmd.arg(self.log_path());
        let out = self.run("pg_ctl start", cmd)?;
        if !out.status.success() {
            return Err(self.failure("pg_ctl start", &out));
        }
        self.state.lock().unwrap().running = true;
        Ok(())
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        if !st.running {
            return Ok(());
        }
        let wait = PG_CTL_WAIT_SECS.to_string();
        let out = self.run(
            "pg_ctl stop",
            self.pg_ctl(&["stop", "-m", mode, "-w", "-t", &wait, "-s"]),
        )?;
        if !out.status.success() && self.status()?.is_some() {
            return Err(self.failure("pg_ctl stop", &out));
        }
        st.running = false;
        // Empty once the server is gone; made again at the next start.
        let _ = std::fs::remove_dir(&self.socket_dir);
        info!(data_dir = %self.data_dir.display(), mode, "stopped the embedded PostgreSQL cluster");
        Ok(())
    }

    /// Deals with a `postmaster.pid` left by an earlier run.
    fn clear_leftovers(&self) -> Result<()> {
        let pid_file = self.data_dir.join("postmaster.pid");
        if !pid_file.exists() {
            return Ok(());
        }
        let recorded: Option<i32> = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
        match self.status()? {
            Some(pid) if is_postgres_process(pid) => {
                // We hold the data directory's lock, so no live absurd-host uses this server:
                // an earlier run died without stopping it. Stop it and start afresh.
                warn!(pid, data_dir = %self.data_dir.display(), "stopping a PostgreSQL server left running by an earlier run");
                self.state.lock().unwrap().running = true;
                self.stop_mode("fast")?;
            }
            Some(pid) => {
                // The recorded pid now belongs to another program: the file is stale.
                warn!(
                    pid,
                    "removing a stale postmaster.pid (its pid now belongs to another program)"
                );
                let _ = std::fs::remove_file(&pid_file);
            }
            None => {
                info!(pid = ?recorded, "found a stale postmaster.pid from a crashed run; starting normally");
            }
        }
        Ok(())
    }

    /// A URL over the socket: `postgresql://<user>@localhost/<db>?host=<socket dir>&port=5432`.
    /// The `host` parameter (a directory) overrides `localhost` in sqlx, libpq and psql alike;
    /// `localhost` is there only because URL parsers refuse an empty host after `user@`. The
    /// port names the socket file, and is given so that a `PGPORT` cannot point elsewhere.
    fn url_for(&self, database: &str) -> String {
        format!(
            "postgresql://{}@localhost/{database}?host={}&port={SOCKET_PORT}",
            self.superuser,
            query_encode(&self.socket_dir.to_string_lossy())
        )
    }

    fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    fn admin_url(&self) -> String {
        self.url_for("postgres")
    }

    /// Waits until the server accepts connections, then creates the `absurd` database.
    fn create_database(&self, deadline: Duration) -> Result<()> {
        let url = self.admin_url();
        block_on(async move {
            use sqlx::Connection;
            let until = Instant::now() + deadline;
            let mut conn = loop {
                match sqlx::PgConnection::connect(&url).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() >= until => {
                        return Err(setup(format!(
                            "the embedded PostgreSQL did not accept connections: {e}"
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            absurd_client::db::create_database_if_missing(&mut conn, DATABASE)
                .await
                .map_err(|e| setup(format!("cannot create database {DATABASE}: {e}")))?;
            let _ = conn.close().await;
            Ok(())
        })
    }
}

impl EmbeddedPostgres {
    /// Starts the cluster in `data_dir`: creates it if the directory is empty or missing,
    /// reuses it otherwise; waits until it accepts connections and creates the `absurd`
    /// database if missing. Blocks (call it from `spawn_blocking` in async code).
    pub fn start(data_dir: &Path) -> Result<EmbeddedPostgres> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            setup(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let data_dir = std::fs::canonicalize(data_dir)
            .map_err(|e| setup(format!("cannot resolve {}: {e}", data_dir.display())))?;
        let lock = Self::lock(&data_dir)?;

        let existing_major: Option<u32> = std::fs::read_to_string(data_dir.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok());
        let fresh = existing_major.is_none();
        if fresh {
            let non_empty = std::fs::read_dir(&data_dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if non_empty {
                return Err(setup(format!(
                    "{} is neither empty nor a PostgreSQL data directory; give an empty or new \
                     directory with --data-dir",
                    data_dir.display()
                )));
            }
        }
        let bins = find_binaries(existing_major)?;

        let run_as = if rustix::process::geteuid().is_root() {
            let who = lookup_user("postgres").ok_or_else(|| {
                setup(
                    "PostgreSQL refuses to run as root, and there is no `postgres` system user to run \
                     it as; create one (`useradd --system --home-dir /var/lib/postgresql postgres`) \
                     or run absurd-host as a normal user",
                )
            })?;
            check_reachable(&data_dir, &who)?;
            chown_tree(&data_dir, &who)?;
            Some(who)
        } else {
            None
        };
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |e| {
                setup(format!(
                    "cannot set the mode of {}: {e}",
                    data_dir.display()
                ))
            },
        )?;

        let saved_user = read_state(&data_dir);
        let superuser = if fresh {
            default_superuser()
        } else {
            saved_user.unwrap_or_else(default_superuser)
        };
        let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let uid = run_as
            .as_ref()
            .map(|w| w.uid)
            .unwrap_or_else(|| rustix::process::geteuid().as_raw());
        let runtime_dir = run_as
            .is_none()
            .then(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
            .flatten();
        let socket_dir = choose_socket_dir(&data_dir, runtime_dir, uid, &tag)?;

        let inner = Arc::new(Inner {
            bins,
            data_dir,
            socket_dir,
            superuser,
            run_as,
            state: Mutex::new(RunState { running: false }),
        });
        if fresh {
            inner.initdb()?;
        } else {
            inner.clear_leftovers()?;
        }
        let pg = EmbeddedPostgres { inner, _lock: lock };

        pg.inner.start_server()?;
        pg.inner.create_database(Duration::from_secs(30))?;
        info!(
            url = %pg.url(),
            version = %pg.inner.bins.version,
            data_dir = %pg.inner.data_dir.display(),
            "embedded PostgreSQL is ready"
        );
        Ok(pg)
    }

    fn lock(data_dir: &Path) -> Result<File> {
        let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = data_dir.with_file_name(name);
        let f = File::create(&path)
            .map_err(|e| setup(format!("cannot create {}: {e}", path.display())))?;
        // A lock just released can still be held for a moment by a child that another thread
        // forked before its exec closed the inherited descriptor: retry briefly before
        // concluding that another absurd-host holds it.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
                return Ok(f);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(setup(format!(
            "another absurd-host is using the PostgreSQL data directory {} (it holds {}); stop \
                 it first, or give this one another --data-dir",
            data_dir.display(),
            path.display()
        )))
    }

    /// `postgresql://<user>@localhost/absurd?host=<socket dir>&port=5432`: over the Unix socket.
    pub fn url(&self) -> String {
        self.inner.url()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The private directory of the Unix socket (for `psql -h`); the server opens no TCP port.
    pub fn socket_dir(&self) -> &Path {
        &self.inner.socket_dir
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.inner.bins
    }

    pub fn is_running(&self) -> bool {
        self.inner.state.lock().unwrap().running
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.inner.clone())
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected, data is flushed).
    pub fn stop(&self) -> Result<()> {
        self.inner.stop_mode("fast")
    }

    /// `pg_ctl stop -m fast`, then start again on the same socket (the URL stays valid).
    pub fn restart(&self) -> Result<()> {
        self.inner.stop_mode("fast")?;
        self.inner.start_server()
    }

    /// Stops the server at once, like a crash (`pg_ctl stop -m immediate`): for tests that
    /// simulate an outage.
    pub fn stop_now(&self) -> Result<()> {
        self.inner.stop_mode("immediate")
    }

    /// Starts the server again after [`stop_now`](Self::stop_now) or [`stop`](Self::stop),
    /// on the same socket so that existing URLs keep working.
    pub fn start_again(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.inner.start_server()?;
        self.inner.create_database(Duration::from_secs(30))
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.inner.stop_mode("fast") {
            warn!(error = %e, "cannot stop the embedded PostgreSQL cluster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_parsed() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").as_deref(),
            Some("15.20")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17devel").as_deref(),
            Some("17")
        );
        assert_eq!(parse_version("garbage"), None);
        assert!(version_key("16.1") > version_key("15.20"));
        assert!(version_key("9.6.24") < version_key("10.1"));
    }

    #[test]
    fn install_hints_name_the_package() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        let h = install_hint_for(debian, false);
        assert!(h.starts_with("`sudo apt-get install postgresql`"), "{h}");
        assert!(h.contains("Debian GNU/Linux 12"), "{h}");
        assert!(install_hint_for("ID=ubuntu\nID_LIKE=debian\n", false)
            .contains("apt-get install postgresql"));
        assert!(
            install_hint_for("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n", false)
                .contains("dnf")
        );
        assert!(install_hint_for("", true).contains("brew"));
        assert!(install_hint_for("ID=weird\n", false).contains("apt-get install postgresql"));
    }

    #[test]
    fn missing_binaries_say_what_to_install() {
        let e = choose(vec![], None).unwrap_err().to_string();
        assert!(e.contains("no PostgreSQL server programs"), "{e}");
        assert!(e.contains("install"), "{e}");
        assert!(e.contains("--database-url"), "{e}");
        let b = |v: &str| PgBinaries {
            dir: PathBuf::from(format!("/pg/{v}")),
            version: v.into(),
            major: version_key(v)[0],
        };
        assert_eq!(
            choose(vec![b("14.3"), b("16.1"), b("15.20")], None)
                .unwrap()
                .version,
            "16.1"
        );
        assert_eq!(
            choose(vec![b("14.3"), b("16.1")], Some(14))
                .unwrap()
                .version,
            "14.3"
        );
        let e = choose(vec![b("16.1")], Some(13)).unwrap_err().to_string();
        assert!(
            e.contains("made by PostgreSQL 13") && e.contains("16.1"),
            "{e}"
        );
    }

    #[test]
    fn the_socket_goes_in_the_data_dir_unless_the_path_is_too_long() {
        let short = Path::new("/home/dev/proj/.absurd/pgdata");
        assert_eq!(
            choose_socket_dir(short, None, 1000, "abc").unwrap(),
            short.join("socket")
        );
        let long = PathBuf::from(format!("/home/dev/{}/pgdata", "x".repeat(90)));
        assert_eq!(
            choose_socket_dir(&long, Some("/run/user/1000".into()), 1000, "abc").unwrap(),
            PathBuf::from("/run/user/1000/absurd-pg-abc")
        );
        assert_eq!(
            choose_socket_dir(&long, None, 1000, "abc").unwrap(),
            PathBuf::from("/tmp/absurd-pg-1000-abc")
        );
        // A relative or overlong runtime directory is passed over.
        let long_rt = PathBuf::from(format!("/run/{}", "r".repeat(100)));
        assert_eq!(
            choose_socket_dir(&long, Some(long_rt), 7, "t").unwrap(),
            PathBuf::from("/tmp/absurd-pg-7-t")
        );
        // Exactly at the limit fits; one byte more does not.
        let at = PathBuf::from(format!("/{}", "d".repeat(MAX_SOCKET_PATH - 2 - 13 - 7)));
        assert_eq!(
            socket_path(&at.join("socket")).as_os_str().len(),
            MAX_SOCKET_PATH
        );
        assert!(fits_socket_limit(&at.join("socket")));
        assert!(!fits_socket_limit(&at.join("socketx")));
    }

    #[test]
    fn socket_urls_encode_the_directory() {
        assert_eq!(query_encode("/tmp/a-b_c.d"), "/tmp/a-b_c.d");
        assert_eq!(
            query_encode("/home/me/my dir/a&b+c#d"),
            "/home/me/my%20dir/a%26b%2Bc%23d"
        );
        let dir = "/srv/we ird&dir+x";
        let url = format!(
            "postgresql://u@localhost/absurd?host={}&port=5432",
            query_encode(dir)
        );
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(opts.get_socket(), Some(&PathBuf::from(dir)), "{url}");
        assert_eq!(opts.get_port(), 5432);
        assert_eq!(opts.get_username(), "u");
        assert_eq!(opts.get_database(), Some("absurd"));
    }

    #[test]
    fn names_that_cannot_be_quoted_in_pg_hba_are_refused() {
        assert_eq!(conf_quote("user", "alice").unwrap(), "\"alice\"");
        assert_eq!(conf_quote("user", "A.Smith").unwrap(), "\"A.Smith\"");
        for bad in ["", "a\"b", "a\nb"] {
            let e = conf_quote("user", bad).unwrap_err().to_string();
            assert!(e.contains("cannot be written into pg_hba.conf"), "{e}");
        }
    }

    #[test]
    fn path_symlinks_resolve_to_the_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let real = dir.join("real");
        let link = dir.join("link");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&link).unwrap();
        for p in PROGRAMS {
            std::fs::write(real.join(p), "").unwrap();
            std::os::unix::fs::symlink(real.join(p), link.join(p)).unwrap();
        }
        let found = candidate_dirs(
            Some(std::env::join_paths([&link, &real]).unwrap()),
            vec![real.clone()],
        );
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(found.iter().filter(|d| **d == real).count(), 1, "{found:?}");
    }
}
