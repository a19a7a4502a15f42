//! `absurd-host build-py`: builds a Python module of `absurd_guest` tasks into a WebAssembly
//! component of the `absurd:task` world, with `componentize-py`.
//!
//! Everything the build needs from this host is inside the binary: the WIT (`wit/`) and the
//! Python SDK (`guest-sdk-py/absurd_guest`) are written to a temporary directory, so a
//! component always targets the world of the host that built it. `componentize-py` itself is
//! installed on first use into a venv in the cache directory (or taken from
//! `--componentize-py`). Requirements are installed as pure-Python wheels only
//! (`py3-none-any`): packages with C extensions cannot run in the sandbox.
//!
//! Built components are cached by the SHA-256 of everything that goes into them (the tool's
//! version, the WIT, the SDK, the app's directory's Python files and the requirements file),
//! so building the same sources again takes milliseconds instead of ~13 s.
//!
//! Every subprocess is started with an argument vector, never through a shell.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use sha2::{Digest, Sha256};

/// The componentize-py release this host builds with (the newest on PyPI when pinned).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The CPython inside componentize-py 0.25.1's components: requirements are resolved for it.
pub const GUEST_PYTHON_VERSION: &str = "3.14";

/// The WIT world the components target: this host's own copy of the newest `absurd:task`
/// (0.2.0, which adds `await-task-result`; the Python SDK uses it).
pub const WIT_TASK: &str = include_str!("../../wit/0.2.0/task.wit");

/// Every `absurd:task` version this host runs (see `absurd_engine::execute::wasm`: 0.1.0 and
/// 0.2.1 are linked, and 0.2.0 imports are served by 0.2.1, semver-compatible): a component
/// built against another one does not link.
pub const HOST_WIT_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.2.1"];

/// The Python SDK, as shipped inside the binary: (file name, contents).
pub const SDK_FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../guest-sdk-py/absurd_guest/__init__.py"),
    ),
    (
        "_params.py",
        include_str!("../../guest-sdk-py/absurd_guest/_params.py"),
    ),
    (
        "_world.py",
        include_str!("../../guest-sdk-py/absurd_guest/_world.py"),
    ),
];

/// The most Python files of the app's directory that go into the cache key (a directory with
/// more is refused: build from a directory of its own).
const MAX_APP_FILES: usize = 10_000;
/// The most bytes of those files.
const MAX_APP_BYTES: u64 = 256 * 1024 * 1024;

/// Options of `absurd-host build-py`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
absurd-host build-py examples/python/calibration_plan.py -o calibration-plan.wasm\n  \
absurd-host build-py app.py -o app.wasm --requirements requirements.txt\n\n\
The module registers its tasks with absurd_guest's @task (guest-sdk-py/README.md). Modules \
beside it (its directory is on the path) and pure-Python requirements are bundled; the \
component is 15-30 MB, CPython and the standard library included. The first build installs \
componentize-py into a venv in the cache directory (network access to PyPI needed once); each \
build then takes about 13 s, and an unchanged one is taken from the cache.")]
pub struct BuildPyArgs {
    /// The Python module whose `@task` functions make the component (a `.py` file whose name
    /// is a Python identifier).
    pub app: PathBuf,
    /// Where to write the component.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// A pip requirements file: its packages (pure-Python wheels only) are bundled.
    #[arg(short, long, value_name = "FILE")]
    pub requirements: Option<PathBuf>,
    /// Use this componentize-py executable instead of the venv in the cache directory.
    #[arg(long, value_name = "PATH", env = "ABSURD_COMPONENTIZE_PY")]
    pub componentize_py: Option<PathBuf>,
    /// The Python that creates the componentize-py venv (3.9 or newer).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "python3",
        env = "ABSURD_BUILD_PYTHON"
    )]
    pub python: PathBuf,
    /// Where componentize-py's venv and built components are cached (default:
    /// $XDG_CACHE_HOME/absurd-host, else ~/.cache/absurd-host).
    #[arg(long, value_name = "DIR", env = "ABSURD_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Build even if the cache has a component built from the same sources.
    #[arg(long)]
    pub no_cache: bool,
    /// Print only the output path (for scripts).
    #[arg(short, long)]
    pub quiet: bool,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub output: PathBuf,
    pub bytes: u64,
    pub cached: bool,
    pub key: String,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("absurd-host")
}

/// `absurd-host build-py`.
pub fn run(args: &BuildPyArgs) -> Result<()> {
    let built = build(args)?;
    if args.quiet {
        println!("{}", built.output.display());
        return Ok(());
    }
    println!(
        "{} {} ({:.1} MB, {} bytes){}",
        if built.cached { "cached" } else { "built" },
        built.output.display(),
        built.bytes as f64 / 1e6,
        built.bytes,
        if built.cached {
            format!(", same sources as cache entry {}", &built.key[..16])
        } else {
            String::new()
        }
    );
    println!("  exports: {}", built.exports.join(", "));
    println!("  imports: {}", built.imports.join(", "));
    Ok(())
}

/// Builds (or takes from the cache) the component for `args`.
pub fn build(args: &BuildPyArgs) -> Result<Built> {
    let app = args.app.as_path();
    let stem = app_module_name(app)?;
    let app_dir = app
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let requirements = match &args.requirements {
        Some(r) => Some(
            std::fs::read(r)
                .with_context(|| format!("cannot read the requirements file {}", r.display()))?,
        ),
        None => None,
    };
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let key = cache_key(&app_dir, &stem, requirements.as_deref())?;
    let cached = cache.join("py-components").join(format!("{key}.wasm"));
    if !args.no_cache && cached.is_file() {
        copy_atomically(&cached, &args.output)?;
        return describe(&args.output, true, key);
    }

    let tool = match &args.componentize_py {
        Some(p) => p.clone(),
        None => ensure_componentize_py(&cache, &args.python, args.quiet)?,
    };
    let tmp = tempfile::Builder::new()
        .prefix("absurd-build-py-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let wit = tmp.path().join("wit");
    let sdk = tmp.path().join("sdk");
    let entry = tmp.path().join("entry");
    let deps = tmp.path().join("deps");
    for d in [&wit, &sdk.join("absurd_guest"), &entry, &deps] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::write(wit.join("task.wit"), WIT_TASK)?;
    for (name, text) in SDK_FILES {
        std::fs::write(sdk.join("absurd_guest").join(name), text)?;
    }
    // The entry module imports the app (its @task functions register, at build time: the
    // interpreter's state after the imports is what the component starts from) and exports
    // the world's class.
    std::fs::write(
        entry.join("absurd_entry.py"),
        format!(
            "import {stem}  # noqa: F401 (registers the tasks)\nfrom absurd_guest._world import WitWorld  # noqa: F401\n"
        ),
    )?;
    if let (Some(req), Some(text)) = (&args.requirements, &requirements) {
        if !String::from_utf8_lossy(text).trim().is_empty() {
            install_requirements(&tool, req, &deps, args.quiet)?;
        }
    }

    let out_tmp = tmp.path().join("component.wasm");
    let started = Instant::now();
    let mut cmd = Command::new(&tool);
    cmd.arg("--quiet")
        .arg("-d")
        .arg(&wit)
        .arg("-w")
        .arg("task")
        .arg("componentize")
        .arg("absurd_entry")
        .args(["-p".as_ref(), entry.as_os_str()])
        .args(["-p".as_ref(), app_dir.as_os_str()])
        .args(["-p".as_ref(), sdk.as_os_str()])
        .args(["-p".as_ref(), deps.as_os_str()])
        .arg("-o")
        .arg(&out_tmp)
        // Only what is asked for: not the caller's virtualenv.
        .env_remove("VIRTUAL_ENV")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run componentize-py ({})", tool.display()))?;
    if !out.status.success() {
        bail!(
            "componentize-py could not build {} ({}):\n{}{}",
            app.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !args.quiet {
        eprintln!(
            "build-py: componentize-py built {} in {:.1} s",
            app.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if let Err(e) = copy_atomically(&out_tmp, &cached) {
        eprintln!("build-py: warning: cannot cache the component: {e:#}");
    }
    copy_atomically(&out_tmp, &args.output)?;
    describe(&args.output, false, key)
}

/// The module name of `app.py`, refused unless it is an importable, non-clashing name.
fn app_module_name(app: &Path) -> Result<String> {
    if !app.is_file() {
        bail!(
            "{} is not a file (expected a Python module such as app.py)",
            app.display()
        );
    }
    if app.extension().and_then(|e| e.to_str()) != Some("py") {
        bail!("{} is not a .py file", app.display());
    }
    let stem = app
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let identifier = stem
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && stem.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !identifier {
        bail!(
            "{}: the module name {stem:?} is not a Python identifier (rename the file, e.g. with _ for -)",
            app.display()
        );
    }
    const TAKEN: &[&str] = &[
        "absurd_entry",
        "absurd_guest",
        "wit_world",
        "task",
        "componentize_py_types",
        "componentize_py_runtime",
        "poll_loop",
    ];
    if TAKEN.contains(&stem.as_str()) {
        bail!(
            "{}: the module name {stem:?} clashes with a module of the build ({}); rename the file",
            app.display(),
            TAKEN.join(", ")
        );
    }
    Ok(stem)
}

/// SHA-256 over the tool's version, the WIT, the SDK, the app's name, the Python files of its
/// directory (recursively, skipping hidden directories and `__pycache__`) and the
/// requirements.
fn cache_key(app_dir: &Path, stem: &str, requirements: Option<&[u8]>) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("componentize-py", COMPONENTIZE_PY_VERSION.as_bytes());
    field("wit", WIT_TASK.as_bytes());
    for (name, text) in SDK_FILES {
        field(name, text.as_bytes());
    }
    field("app", stem.as_bytes());
    field("requirements", requirements.unwrap_or_default());
    let mut files = BTreeSet::new();
    collect_py(app_dir, app_dir, &mut files)?;
    let mut total = 0u64;
    for rel in &files {
        let bytes = std::fs::read(app_dir.join(rel))
            .with_context(|| format!("cannot read {}", app_dir.join(rel).display()))?;
        total += bytes.len() as u64;
        if total > MAX_APP_BYTES {
            bail!(
                "the Python files under {} weigh more than {MAX_APP_BYTES} bytes; the limit is {MAX_APP_BYTES}: build from a directory of its own",
                app_dir.display()
            );
        }
        field(&rel.to_string_lossy(), &bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn collect_py(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            collect_py(root, &path, out)?;
        } else if kind.is_file() && name.ends_with(".py") {
            if out.len() >= MAX_APP_FILES {
                bail!(
                    "more than {MAX_APP_FILES} Python files under {}; the limit is {MAX_APP_FILES}: build from a directory of its own",
                    root.display()
                );
            }
            out.insert(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// The componentize-py of the venv `<cache>/componentize-py-<version>`, installed if missing.
pub fn ensure_componentize_py(cache: &Path, python: &Path, quiet: bool) -> Result<PathBuf> {
    let venv = cache.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"));
    let tool = venv.join("bin").join("componentize-py");
    let version_ok = |tool: &Path| {
        Command::new(tool)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some_and(|o| {
                String::from_utf8_lossy(&o.stdout).trim()
                    == format!("componentize-py {COMPONENTIZE_PY_VERSION}")
            })
    };
    if tool.is_file() && version_ok(&tool) {
        return Ok(tool);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    if !quiet {
        eprintln!(
            "build-py: installing componentize-py {COMPONENTIZE_PY_VERSION} into {} (once)",
            venv.display()
        );
    }
    if !venv.join("bin").join("python").is_file() {
        run_checked(
            Command::new(python).arg("-m").arg("venv").arg(&venv),
            "create the componentize-py venv",
        )?;
    }
    run_checked(
        Command::new(venv.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}")),
        "install componentize-py from PyPI",
    )?;
    if !version_ok(&tool) {
        bail!(
            "{} is not componentize-py {COMPONENTIZE_PY_VERSION} after installing it",
            tool.display()
        );
    }
    Ok(tool)
}

/// Installs the requirements' pure-Python wheels into `deps` with the tool venv's pip.
fn install_requirements(tool: &Path, req: &Path, deps: &Path, quiet: bool) -> Result<()> {
    let python = tool
        .parent()
        .map(|bin| bin.join("python"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"));
    if !quiet {
        eprintln!(
            "build-py: bundling the pure-Python packages of {}",
            req.display()
        );
    }
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
    ])
    .args(["--no-compile", "--only-binary=:all:", "--platform", "any"])
    .args(["--implementation", "py", "--abi", "none"])
    .args(["--python-version", GUEST_PYTHON_VERSION])
    .arg("--target")
    .arg(deps)
    .arg("-r")
    .arg(req);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "cannot bundle the requirements of {}: only pure-Python wheels (py3-none-any) run in the sandbox; pip said:\n{}",
            req.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot {what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let args: Vec<OsString> = cmd.get_args().map(OsString::from).collect();
        bail!(
            "cannot {what}: {:?} {:?} exited with {}:\n{}",
            cmd.get_program(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        to.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::copy(from, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("cannot write {}", to.display()))?;
    Ok(())
}

fn describe(output: &Path, cached: bool, key: String) -> Result<Built> {
    let bytes =
        std::fs::read(output).with_context(|| format!("cannot read {}", output.display()))?;
    let (imports, exports) = component_interface(&bytes)
        .with_context(|| format!("{} is not a readable component", output.display()))?;
    Ok(Built {
        output: output.to_path_buf(),
        bytes: bytes.len() as u64,
        cached,
        key,
        exports,
        imports,
    })
}

/// The names of a component's top-level imports and exports.
pub fn component_interface(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    use wasmparser::{Parser, Payload};
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for i in s {
                    imports.push(i?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for e in s {
                    exports.push(e?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// The `absurd:task` package versions a component's imports and exports name (`0.1.0`, …).
pub fn absurd_task_versions(bytes: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok((imports, exports)) = component_interface(bytes) else {
        return out;
    };
    for name in imports.iter().chain(&exports) {
        if let Some(rest) = name.strip_prefix("absurd:task/") {
            if let Some((_, version)) = rest.split_once('@') {
                out.insert(version.to_string());
            }
        }
    }
    out
}

/// The package version `build-py` builds against (`package absurd:task@X;` of [`WIT_TASK`]).
pub fn host_wit_version() -> &'static str {
    WIT_TASK
        .lines()
        .find_map(|l| l.trim().strip_prefix("package absurd:task@"))
        .map(|v| v.trim_end_matches(';'))
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_must_be_identifiers_and_not_clash() {
        let dir = tempfile::tempdir().unwrap();
        for (name, ok) in [
            ("app.py", true),
            ("my_app2.py", true),
            ("calibration-plan.py", false),
            ("2app.py", false),
            ("wit_world.py", false),
            ("absurd_guest.py", false),
            ("app.txt", false),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, "").unwrap();
            assert_eq!(app_module_name(&p).is_ok(), ok, "{name}");
        }
        assert!(app_module_name(&dir.path().join("missing.py")).is_err());
    }

    #[test]
    fn the_cache_key_follows_the_app_directory_and_requirements() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        let a = cache_key(dir.path(), "app", None).unwrap();
        assert_eq!(a, cache_key(dir.path(), "app", None).unwrap());
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/app.pyc"), "junk").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not python").unwrap();
        assert_eq!(a, cache_key(dir.path(), "app", None).unwrap());
        std::fs::create_dir(dir.path().join("helpers")).unwrap();
        std::fs::write(dir.path().join("helpers/util.py"), "y = 2\n").unwrap();
        let b = cache_key(dir.path(), "app", None).unwrap();
        assert_ne!(a, b, "a helper module is part of the sources");
        assert_ne!(
            b,
            cache_key(dir.path(), "app", Some(b"attrs==23.1")).unwrap()
        );
        assert_ne!(b, cache_key(dir.path(), "other", None).unwrap());
    }

    #[test]
    fn the_host_wit_version_is_read_from_the_embedded_wit() {
        assert_eq!(host_wit_version(), "0.2.0");
        assert!(HOST_WIT_VERSIONS.contains(&host_wit_version()));
        for (v, wit) in [
            ("0.1.0", include_str!("../../wit/task.wit")),
            ("0.2.0", include_str!("../../wit/0.2.0/task.wit")),
            ("0.2.1", include_str!("../../wit/0.2.1/task.wit")),
        ] {
            assert!(wit.contains(&format!("package absurd:task@{v};")), "{v}");
            assert!(HOST_WIT_VERSIONS.contains(&v), "{v}");
        }
    }
}
