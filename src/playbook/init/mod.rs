//! `keywheel init`: a commented playbook for a chosen issuer and targets,
//! to start from.
//!
//! Every field written has a comment that explains it. Optional fields and
//! sections are written commented out, with their defaults. Values that only
//! the operator can fill in, such as an IAM user or the path of a secret,
//! are written as [`PLACEHOLDER`]. `validate` accepts a playbook that still has
//! them, so the output is valid as written, but it prints a warning for
//! each one, with its line, until it is replaced.

mod sections;

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::decode::{Cx, FieldPath};
use super::yaml::{Node, Value, quote_scalar};

/// The value `init` writes where the operator must fill something in. It
/// is valid as a name, a path and an id, so the playbook validates.
pub const PLACEHOLDER: &str = "change-me";

/// Mode of a playbook `init` writes: a playbook names the variables and
/// files that hold secrets, never a secret itself, so others may read it.
pub const PLAYBOOK_MODE: u32 = 0o644;

/// Column where comments after a field start, unless the field is longer.
const COMMENT_COLUMN: usize = 34;
/// Lines longer than this get their comment on the line above.
const MAX_WIDTH: usize = 88;
/// Width of comment lines.
const NOTE_WIDTH: usize = 78;

/// The issuer, targets and name of the playbook to write.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// An issuer kind from [`crate::issuers::KINDS`].
    pub issuer: &'a str,
    /// Target kinds from [`crate::targets::KINDS`]; a kind may repeat.
    pub targets: &'a [&'a str],
    pub name: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("unknown issuer kind {0:?}; use one of: {kinds}", kinds = crate::issuers::KINDS.join(", "))]
    UnknownIssuer(String),
    #[error("unknown target kind {0:?}; use one of: {kinds}", kinds = crate::targets::KINDS.join(", "))]
    UnknownTarget(String),
    #[error("no target; name at least one with --target")]
    NoTarget,
    #[error("invalid name {0:?}: {rule}", rule = super::NAME_RULE)]
    InvalidName(String),
    #[error("{} exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Returns the playbook text for `options`.
pub fn render(options: &Options<'_>) -> Result<String, InitError> {
    render_with(options, false)
}

/// Renders the playbook; with `enable_optional` the optional fields are
/// written as YAML instead of comments, so tests can validate them too.
fn render_with(options: &Options<'_>, enable_optional: bool) -> Result<String, InitError> {
    if !crate::issuers::KINDS.contains(&options.issuer) {
        return Err(InitError::UnknownIssuer(options.issuer.to_string()));
    }
    if let Some(kind) = options
        .targets
        .iter()
        .find(|kind| !crate::targets::KINDS.contains(kind))
    {
        return Err(InitError::UnknownTarget(kind.to_string()));
    }
    if options.targets.is_empty() {
        return Err(InitError::NoTarget);
    }
    if !super::is_valid_name(options.name) {
        return Err(InitError::InvalidName(options.name.to_string()));
    }
    let mut writer = Writer::new(enable_optional);
    sections::playbook(&mut writer, options);
    Ok(writer.out)
}

/// Returns the playbook name to use without `--name`: the output file's
/// name without its extension when that is a valid name, else
/// [`PLACEHOLDER`].
pub fn default_name(output: Option<&Path>) -> String {
    output
        .and_then(Path::file_stem)
        .and_then(|stem| stem.to_str())
        .filter(|stem| super::is_valid_name(stem))
        .unwrap_or(PLACEHOLDER)
        .to_string()
}

/// Writes `text` to a new file at `path` with mode [`PLAYBOOK_MODE`]. An
/// existing file is an error unless `force` is set, and is then replaced
/// atomically.
pub fn write(path: &Path, text: &str, force: bool) -> Result<(), InitError> {
    let failed = |source: io::Error| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    if force {
        return crate::fsutil::write_atomic(path, text.as_bytes(), PLAYBOOK_MODE).map_err(failed);
    }
    // create_new fails when the file exists, so a file created meanwhile by
    // someone else is never replaced either.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PLAYBOOK_MODE)
        .open(path)
        .map_err(|err| match err.kind() {
            io::ErrorKind::AlreadyExists => InitError::Exists(path.to_path_buf()),
            _ => failed(err),
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(PLAYBOOK_MODE))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(failed)
}

/// Adds a warning for each value that still contains [`PLACEHOLDER`].
pub fn warn_placeholders(root: &Node, cx: &mut Cx) {
    warn_in(root, &FieldPath::root(), cx);
}

fn warn_in(node: &Node, path: &FieldPath, cx: &mut Cx) {
    match &node.value {
        Value::Scalar(scalar) if scalar.text.contains(PLACEHOLDER) => cx.warn(
            node,
            path,
            format!("{PLACEHOLDER} is a placeholder written by `keywheel init`; replace it"),
        ),
        Value::Scalar(_) => {}
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                warn_in(item, &path.index(index), cx);
            }
        }
        Value::Mapping(entries) => {
            for (key, value) in entries {
                if let Value::Scalar(key) = &key.value {
                    warn_in(value, &path.key(&key.text), cx);
                }
            }
        }
    }
}

/// Builds the playbook text line by line, with aligned comments.
struct Writer {
    out: String,
    enable_optional: bool,
    /// Column of the `#` of optional lines inside an optional section, so
    /// that the section reads as one commented-out block.
    block_column: Option<usize>,
}

impl Writer {
    fn new(enable_optional: bool) -> Self {
        Self {
            out: String::new(),
            enable_optional,
            block_column: None,
        }
    }

    /// Writes the optional lines of `write` as one commented-out block
    /// whose `#` is at column `indent`.
    fn optional_block(&mut self, indent: usize, write: impl FnOnce(&mut Self)) {
        self.block_column = Some(indent);
        write(self);
        self.block_column = None;
    }

    /// Writes `yaml` at `indent`, with `comment` after it.
    fn field(&mut self, indent: usize, yaml: &str, comment: &str) {
        self.line(indent, "", yaml, comment);
    }

    /// Writes lines of YAML and comment at `indent`, each further indented
    /// by the blanks its YAML starts with.
    fn fields(&mut self, indent: usize, lines: &[(&str, &str)]) {
        for (yaml, comment) in lines {
            let (extra, yaml) = split_indent(yaml);
            self.field(indent + extra, yaml, comment);
        }
    }

    /// Writes lines as [`Writer::optional`] does, indented as
    /// [`Writer::fields`] does.
    fn optionals(&mut self, indent: usize, lines: &[(&str, &str)]) {
        for (yaml, comment) in lines {
            let (extra, yaml) = split_indent(yaml);
            self.optional(indent + extra, yaml, comment);
        }
    }

    /// Writes `yaml` commented out: an optional field, shown with its
    /// default or an example value.
    fn optional(&mut self, indent: usize, yaml: &str, comment: &str) {
        if self.enable_optional {
            self.line(indent, "", yaml, comment);
            return;
        }
        let column = self.block_column.unwrap_or(indent).min(indent);
        let mark = format!("# {:width$}", "", width = indent - column);
        self.line(column, &mark, yaml, comment);
    }

    /// Writes `text` as comment lines at `indent`, wrapped.
    fn note(&mut self, indent: usize, text: &str) {
        let width = NOTE_WIDTH.saturating_sub(indent + 2);
        let mut line = String::new();
        for word in text.split(' ') {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                self.comment_line(indent, &line);
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        self.comment_line(indent, &line);
    }

    fn blank(&mut self) {
        self.out.push('\n');
    }

    fn comment_line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{:indent$}# {text}", "");
    }

    fn line(&mut self, indent: usize, mark: &str, yaml: &str, comment: &str) {
        let code = format!("{:indent$}{mark}{yaml}", "");
        let column = COMMENT_COLUMN.max(code.len() + 2);
        if comment.is_empty() {
            let _ = writeln!(self.out, "{code}");
        } else if column + 2 + comment.len() > MAX_WIDTH {
            self.note(indent, comment);
            let _ = writeln!(self.out, "{code}");
        } else {
            let _ = writeln!(self.out, "{code:column$}# {comment}");
        }
    }
}

/// Splits the leading blanks off `yaml`, returning their number.
fn split_indent(yaml: &str) -> (usize, &str) {
    let text = yaml.trim_start_matches(' ');
    (yaml.len() - text.len(), text)
}

/// Writes `text` as a YAML scalar, quoted where a reader could take it for
/// something else.
fn scalar(text: &str) -> String {
    quote_scalar(text)
}

#[cfg(test)]
mod tests;
