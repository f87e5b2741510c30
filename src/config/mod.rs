//! Configuration: TOML fragments merged into one validated [`Settings`].
//!
//! `/etc/ecs-patchd/config.toml` is read first, then `/etc/ecs-patchd/config.d/*.toml` in
//! lexical order; a later fragment wins key by key. `--config PATH` replaces both. Every
//! fragment is checked on its own, so an error names the file that holds the bad key.
//! The settings and their defaults are in [`settings`]; the rules that span keys in
//! `validate.rs`.

mod livepatch;
mod settings;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use livepatch::LivePatchSettings;
pub use settings::*;
use validate::validate;

use crate::error::{Error, Result};
use crate::trust;

/// Which files a configuration is read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The default file and fragment directory (either may be absent).
    Default {
        /// The main file.
        file: PathBuf,
        /// The fragment directory.
        fragments: PathBuf,
    },
    /// Exactly one file, which must exist (`--config PATH`).
    Explicit(PathBuf),
}

impl Default for Source {
    fn default() -> Self {
        Source::Default { file: DEFAULT_CONFIG_FILE.into(), fragments: DEFAULT_FRAGMENT_DIR.into() }
    }
}

impl Source {
    /// The files to read, in the order they apply.
    fn files(&self) -> Result<Vec<PathBuf>> {
        match self {
            Source::Explicit(path) => Ok(vec![path.clone()]),
            Source::Default { file, fragments } => {
                let mut files = Vec::new();
                if file.exists() {
                    files.push(file.clone());
                }
                match std::fs::read_dir(fragments) {
                    Ok(entries) => {
                        let mut found: Vec<PathBuf> = entries
                            .filter_map(|entry| entry.ok().map(|e| e.path()))
                            .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
                            .collect();
                        found.sort();
                        files.extend(found);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Config(format!(
                            "cannot read the configuration directory {}: {e}",
                            fragments.display()
                        )));
                    }
                }
                Ok(files)
            }
        }
    }
}

/// Reads, merges and validates the configuration from `source`.
pub fn load(source: &Source) -> Result<Settings> {
    let mut merged = toml::Table::new();
    let mut origins = BTreeMap::new();
    if let Source::Default { fragments, .. } = source
        && fragments.exists()
    {
        trust::path_checked(fragments, RUN_AS_ROOT).map_err(Error::Config)?;
    }
    for file in source.files()? {
        let bytes = trust::read_file(&file, MAX_FILE_BYTES, RUN_AS_ROOT).map_err(Error::Config)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::Config(format!("{}: not valid TOML: not UTF-8 ({e})", file.display())))?;
        let table = parse_fragment(&file, &text)?;
        merge(&mut merged, table, "", &file, &mut origins);
    }
    let settings: Settings =
        toml::Value::Table(merged).try_into().map_err(|e| Error::Config(format!("configuration: {e}")))?;
    validate(&settings, &origins)?;
    Ok(settings)
}

/// What is at stake when a configuration file is not root's alone.
const RUN_AS_ROOT: &str = "its settings name commands run as root";

/// The largest configuration file read (a real one is a few kilobytes).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// `url` with its path masked too (`https://hooks.slack.com/***`): a webhook's token is
/// its path.
pub fn redact_path(url: &str) -> String {
    let masked = redact_url(url);
    match masked.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}/***"),
            None => masked,
        },
        None if masked.is_empty() => masked,
        None => "***".into(),
    }
}

/// `url` with any user name and password masked (`https://***@host/...`), for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Parses one fragment and checks it against the schema on its own.
fn parse_fragment(file: &Path, text: &str) -> Result<toml::Table> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        Error::Config(format!("{}: not valid TOML{}: {}", file.display(), line_of(text, e.span()), e.message()))
    })?;
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| Error::Config(format!("{}: not valid TOML: {}", file.display(), e.message())))?;
    if let Err(e) = serde_path_to_error::deserialize::<_, Settings>(deserializer) {
        let key = e.path().to_string();
        let inner = e.into_inner();
        return Err(Error::Config(format!(
            "{}{}: key `{key}`: {}",
            file.display(),
            line_of(text, inner.span()),
            explain(inner.message())
        )));
    }
    Ok(table)
}

/// Turns serde's wording into what an operator needs to fix the value.
fn explain(message: &str) -> String {
    if message.contains("expected a duration") || message.contains("time unit") {
        format!("{message} (write a duration such as \"90s\", \"10m\" or \"1h 30m\")")
    } else {
        message.to_string()
    }
}

/// " (line N)" for a byte span of `text`, or nothing when there is no span.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

/// Merges `from` into `into`, key by key; records which file set each leaf.
fn merge(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    file: &Path,
    origins: &mut BTreeMap<String, PathBuf>,
) {
    for (key, value) in from {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming, &path, file, origins);
            }
            (_, value) => {
                if let toml::Value::Table(t) = &value {
                    record_origins(t, &path, file, origins);
                } else {
                    origins.insert(path, file.to_path_buf());
                }
                into.insert(key, value);
            }
        }
    }
}

fn record_origins(table: &toml::Table, prefix: &str, file: &Path, origins: &mut BTreeMap<String, PathBuf>) {
    for (key, value) in table {
        let path = format!("{prefix}.{key}");
        match value {
            toml::Value::Table(t) => record_origins(t, &path, file, origins),
            _ => {
                origins.insert(path, file.to_path_buf());
            }
        }
    }
}

#[cfg(test)]
mod tests;
