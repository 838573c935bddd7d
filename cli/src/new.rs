//! `skillbox new NAME --lang rust|python`: a ready-to-build skill directory from the templates
//! in the repository's `templates/`, embedded in the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::exit::{self, with_code};
use crate::skills::print_stdout;

/// The componentize-py version the Python template is written and tested against (the one
/// `sample-skills/build-python.sh` installs into `target/componentize-py/`; a test checks).
macro_rules! componentize_py_version {
    () => {
        "0.25.1"
    };
}
pub const COMPONENTIZE_PY_VERSION: &str = componentize_py_version!();

/// The environment variable naming a componentize-py executable for `skillbox build`.
pub const COMPONENTIZE_PY_ENV: &str = "SKILLBOX_COMPONENTIZE_PY";

#[derive(Debug, clap::Args)]
#[command(after_help = NEW_HELP)]
pub struct NewArgs {
    /// The skill's name: 1-64 lowercase letters, digits and '-', starting with a letter.
    name: String,
    /// The language of the skill's source.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The directory to create [default: ./NAME]. It must not exist or be empty.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

// One line per paragraph: clap wraps them to the terminal.
const NEW_HELP: &str = concat!(
    "Then: `skillbox build NAME` and `skillbox run NAME --input '{}'`.\n\n",
    "Rust skills need the wasm32-wasip2 target (`rustup target add wasm32-wasip2`).\n\n",
    "Python skills are built with componentize-py ",
    componentize_py_version!(),
    ". `skillbox build` runs the build command with PATH extended (at the end, so a \
     componentize-py of your own comes first) by the directory of $SKILLBOX_COMPONENTIZE_PY if it \
     is set, else by <dir of the skillbox executable>/../componentize-py/bin if that exists: the \
     copy the repository's set-up installs with sample-skills/build-python.sh \
     (target/release/skillbox finds target/componentize-py/bin).\n\n",
    "The new skill's README.md says where to go next: docs/authoring.md in the skillbox repository."
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built by cargo for wasm32-wasip2.
    Rust,
    /// Python, built by componentize-py.
    Python,
}

/// The WIT package, written to every new skill's `wit/` (a test checks it equals the repository's).
pub const WIT: &[(&str, &str)] = &[
    ("credentials.wit", include_str!("../../wit/credentials.wit")),
    ("http.wit", include_str!("../../wit/http.wit")),
    ("log.wit", include_str!("../../wit/log.wit")),
    ("signing.wit", include_str!("../../wit/signing.wit")),
    ("sql.wit", include_str!("../../wit/sql.wit")),
    ("types.wit", include_str!("../../wit/types.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

const RUST: &[(&str, &str)] = &[
    ("skill.toml", include_str!("../../templates/rust/skill.toml")),
    ("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../../templates/rust/src/lib.rs")),
    ("input.json", include_str!("../../templates/rust/input.json")),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (".gitignore", include_str!("../../templates/rust/gitignore")),
];

const PYTHON: &[(&str, &str)] = &[
    ("skill.toml", include_str!("../../templates/python/skill.toml")),
    ("app.py", include_str!("../../templates/python/app.py")),
    ("input.json", include_str!("../../templates/python/input.json")),
    ("README.md", include_str!("../../templates/python/README.md")),
    (".gitignore", include_str!("../../templates/python/gitignore")),
];

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let usage = |message: String| with_code(exit::USAGE, anyhow::anyhow!(message));
    skillbox_runtime::manifest::check_name(&args.name)
        .map_err(|e| usage(e.replacen("skill.name", "the skill name", 1)))?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    check_empty(&dir).map_err(usage)?;

    let files = match args.lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
    };
    let substitute = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate}}", &args.name.replace('-', "_"))
            .replace("{{componentize_py_version}}", COMPONENTIZE_PY_VERSION)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in files {
        write_new(&dir.join(path), &substitute(text))?;
    }
    for (file, text) in WIT {
        write_new(&dir.join("wit").join(file), text)?;
    }

    let shown = dir.display();
    let lang = match args.lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
    };
    let mut text = format!("created {} ({lang}) in {shown}\n", args.name);
    if args.lang == Lang::Python && find_componentize_py().is_none() {
        text += &format!("\nnote: {}\n", componentize_py_missing());
    }
    text += &format!(
        "\nnext:\n  skillbox build {shown}\n  skillbox run {shown} --input '{{}}'\n  skillbox run {shown} --input-file {}",
        dir.join("input.json").display()
    );
    print_stdout(&text)
}

/// Refuses a path that is a file, or a directory with anything in it.
fn check_empty(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} already exists and is not empty; choose another NAME or --dir, or empty it first",
                    dir.display()
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() => Err(format!("{} already exists and is not a directory", dir.display())),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Writes a file that must not exist yet (so nothing is ever overwritten).
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The directory `skillbox build` appends to PATH so a build command finds componentize-py:
/// the directory of `$SKILLBOX_COMPONENTIZE_PY` if it is set, else
/// `<dir of this executable>/../componentize-py/bin` if it exists.
pub fn componentize_py_dir() -> Option<PathBuf> {
    if let Some(exe) = std::env::var_os(COMPONENTIZE_PY_ENV).filter(|v| !v.is_empty()) {
        let exe = PathBuf::from(exe);
        return Some(match exe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        });
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.join("../componentize-py/bin");
    dir.is_dir().then_some(dir)
}

/// PATH with [`componentize_py_dir`] appended (when there is one and it is not already on it).
pub fn build_path() -> Option<std::ffi::OsString> {
    let extra = componentize_py_dir()?;
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if !dirs.contains(&extra) {
        dirs.push(extra);
    }
    std::env::join_paths(dirs).ok()
}

/// The componentize-py that a build command would run, searching the PATH of [`build_path`].
pub fn find_componentize_py() -> Option<PathBuf> {
    let path = build_path().or_else(|| std::env::var_os("PATH"))?;
    let name = if cfg!(windows) { "componentize-py.exe" } else { "componentize-py" };
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|file| file.is_file())
}

/// What to do when componentize-py cannot be found.
pub fn componentize_py_missing() -> String {
    format!(
        "componentize-py is not installed: Python skills are built with componentize-py {v}. \
         In the skillbox repository run `sample-skills/build-python.sh` (it installs it into \
         target/componentize-py/, which target/release/skillbox finds), or install it yourself \
         (`python3 -m venv ~/.componentize-py && ~/.componentize-py/bin/pip install componentize-py=={v}`) \
         and put it on PATH or set {env} to its path",
        v = COMPONENTIZE_PY_VERSION,
        env = COMPONENTIZE_PY_ENV,
    )
}
