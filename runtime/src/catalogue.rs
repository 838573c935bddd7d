//! A tool catalogue: every skill found below some directories, loaded once, each one a tool
//! with a name agents can call, a description and input/output JSON Schemas.
//!
//! Used by `skillbox mcp` and `skillbox serve`. Tool names must match
//! `^[a-zA-Z0-9_-]{1,64}$` (some MCP clients reject the whole tool list when one name does
//! not); two skills with the same name are an error naming both files. A skill that fails to
//! load (a component not built, a broken manifest) is skipped and reported, so one bad
//! directory does not take every tool down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::schema::Schema;
use crate::{InvocationContext, Output, Runtime, Skill};

/// How deep below a `--skills` directory manifests are looked for.
const MAX_DEPTH: usize = 4;

/// Directory names never searched: build outputs, dependencies, VCS data.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules", "build"];

/// One callable skill.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The tool name: the skill's manifest name.
    pub name: String,
    /// What it does (the manifest's `description`).
    pub description: String,
    /// The schema its input must match.
    pub input: Schema,
    /// The schema of its result, if the manifest gives one.
    pub output: Option<Schema>,
    /// The loaded skill, kept warm across calls.
    pub skill: Skill,
    /// The manifest it came from.
    pub manifest: PathBuf,
}

impl Tool {
    /// Checks `input` against the input schema, then runs the skill with it: an input that
    /// does not match is [`Error::InputSchema`], and no instance is created for it.
    pub async fn invoke(&self, input: &serde_json::Value, context: &InvocationContext) -> Result<Output> {
        self.check(input)?;
        self.skill.invoke_with(&input.to_string(), context).await
    }

    /// [`Tool::invoke`], asking `approver` about ungranted credentials (see
    /// [`Skill::invoke_approved_by`]).
    pub async fn invoke_approved_by(
        &self,
        input: &serde_json::Value,
        context: &InvocationContext,
        approver: std::sync::Arc<dyn crate::Approver>,
    ) -> Result<Output> {
        self.check(input)?;
        self.skill.invoke_approved_by(&input.to_string(), context, approver).await
    }

    fn check(&self, input: &serde_json::Value) -> Result<()> {
        self.input.check(input).map_err(|message| Error::InputSchema { skill: self.name.clone(), message })
    }
}

/// A manifest that was found but not loaded, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The manifest.
    pub manifest: PathBuf,
    /// Why it was not loaded.
    pub error: Error,
}

/// The loaded tools, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    tools: BTreeMap<String, Tool>,
}

impl Catalogue {
    /// Finds every `skill.toml` below `dirs` (or a `dir` that is itself a skill) and loads it
    /// on `runtime`. A name that is not a valid tool name, or two skills with the same name,
    /// is an error; a skill that fails to load otherwise is returned in the skipped list.
    pub fn load(runtime: &Runtime, dirs: &[PathBuf]) -> Result<(Catalogue, Vec<Skipped>)> {
        let mut manifests = Vec::new();
        for dir in dirs {
            if !dir.exists() {
                return Err(Error::Catalogue(format!(
                    "--skills {}: no such directory (give a directory holding skill directories, each with a skill.toml)",
                    dir.display()
                )));
            }
            find_manifests(dir, 0, &mut manifests);
        }
        manifests.sort();
        manifests.dedup();
        let mut tools: BTreeMap<String, Tool> = BTreeMap::new();
        let mut skipped = Vec::new();
        for path in manifests {
            let manifest = match Manifest::load(&path) {
                Ok(m) => m,
                Err(error) => {
                    skipped.push(Skipped { manifest: path, error });
                    continue;
                }
            };
            let name = manifest.skill.name.clone();
            check_tool_name(&name, &path)?;
            if let Some(other) = tools.get(&name) {
                return Err(Error::Catalogue(format!(
                    "two skills are named `{name}`: {} and {}; tool names must be unique, so rename one \
                     (`[skill] name`) or leave it out of --skills",
                    other.manifest.display(),
                    path.display()
                )));
            }
            let loaded = manifest
                .input_schema()
                .and_then(|input| Ok((input, manifest.output_schema()?)))
                .and_then(|(input, output)| Ok((input, output, runtime.load_manifest(manifest.clone())?)));
            match loaded {
                Ok((input, output, skill)) => {
                    let description = if manifest.skill.description.is_empty() {
                        format!("The `{name}` skill.")
                    } else {
                        manifest.skill.description.clone()
                    };
                    tools.insert(name.clone(), Tool { name, description, input, output, skill, manifest: path });
                }
                Err(error) => skipped.push(Skipped { manifest: path, error }),
            }
        }
        Ok((Catalogue { tools }, skipped))
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// Every tool, by name.
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// Whether `name` is a tool name every MCP client accepts: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_tool_name(name: &str, manifest: &Path) -> Result<()> {
    if is_tool_name(name) {
        return Ok(());
    }
    Err(Error::Manifest {
        path: manifest.to_owned(),
        message: format!(
            "[skill] name {:?} cannot be a tool name: use 1 to 64 letters, digits, '-' or '_' \
             (MCP clients reject the whole tool list when one name does not)",
            crate::display::escape(name)
        ),
    })
}

/// Collects `skill.toml` files at or below `dir`, not following symlinks.
fn find_manifests(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let manifest = dir.join(MANIFEST_FILE);
    if manifest.is_file() {
        out.push(manifest);
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut children: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_ref())
        })
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        find_manifests(&child, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::is_tool_name;

    #[test]
    fn tool_names_fit_every_client() {
        for ok in ["hello", "github-issues", "a_b", "A9", &"x".repeat(64)] {
            assert!(is_tool_name(ok), "{ok}");
        }
        for bad in ["", "a.b", "a b", "héllo", &"x".repeat(65), "a/b"] {
            assert!(!is_tool_name(bad), "{bad}");
        }
    }
}
