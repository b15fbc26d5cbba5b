//! A span-aware reader over a parsed TOML document.
//!
//! We do not deserialize the config with serde directly: serde stops at the
//! first error, and an operator fixing a config wants *every* mistake at once,
//! each with `file:line:col`. Instead every getter here reads one key, checks
//! its type and human units, records an error (with the key's position) when it
//! is wrong and carries on. `Tbl::finish` then reports keys nobody asked for,
//! with the closest valid name, which is what `deny_unknown_fields` would do.

use std::cell::RefCell;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, Key, Value};

use super::units::{parse_duration, parse_size};
use super::ConfigError;

/// The text of one config file and where its lines start.
pub struct Source {
    pub file: String,
    line_starts: Vec<usize>,
    text: String,
}

impl Source {
    pub fn new(file: String, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            file,
            line_starts,
            text,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self.text[start..offset].chars().count() + 1;
        (line + 1, col)
    }
}

/// Collects errors while a document is read.
pub struct Reader<'s> {
    pub src: &'s Source,
    errors: RefCell<Vec<ConfigError>>,
}

impl<'s> Reader<'s> {
    pub fn new(src: &'s Source) -> Self {
        Reader {
            src,
            errors: RefCell::new(Vec::new()),
        }
    }

    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, col) = self.src.locate(span.map(|s| s.start).unwrap_or(0));
        self.errors.borrow_mut().push(ConfigError {
            file: self.src.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        let mut errors = self.errors.into_inner();
        errors.sort_by_key(|e| (e.line, e.col));
        errors
    }

    /// Views a table-like item (a `[table]`, an inline table or an element of
    /// an array of tables). `what` names it in messages, e.g. `[[service]] "web"`.
    pub fn table<'a>(&'a self, item: &'a Item, what: String) -> Option<Tbl<'a, 's>> {
        let (entries, span) = match item {
            Item::Table(t) => (
                t.iter()
                    .filter_map(|(k, _)| t.get_key_value(k))
                    .collect::<Vec<_>>(),
                t.span(),
            ),
            Item::Value(Value::InlineTable(t)) => (
                t.iter()
                    .filter_map(|(k, _)| t.get_key_value(k))
                    .collect::<Vec<_>>(),
                t.span(),
            ),
            other => {
                self.error(
                    other.span(),
                    format!("expected a table for {what}, found {}", type_name(other)),
                );
                return None;
            }
        };
        Some(self.view(entries, span, what))
    }

    /// Views one element of an array of tables.
    pub fn table_of<'a>(&'a self, t: &'a toml_edit::Table, what: String) -> Tbl<'a, 's> {
        let entries = t
            .iter()
            .filter_map(|(k, _)| t.get_key_value(k))
            .collect::<Vec<_>>();
        self.view(entries, t.span(), what)
    }

    fn view<'a>(
        &'a self,
        entries: Vec<(&'a Key, &'a Item)>,
        span: Option<Range<usize>>,
        what: String,
    ) -> Tbl<'a, 's> {
        Tbl {
            r: self,
            entries,
            span,
            what,
            known: RefCell::new(Vec::new()),
        }
    }
}

pub fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(Value::String(_)) => "a string",
        Item::Value(Value::Integer(_)) => "an integer",
        Item::Value(Value::Float(_)) => "a float",
        Item::Value(Value::Boolean(_)) => "a boolean",
        Item::Value(Value::Datetime(_)) => "a datetime",
        Item::Value(Value::Array(_)) => "an array",
        Item::Value(Value::InlineTable(_)) => "a table",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

/// One table being read. Every getter marks its key as known.
pub struct Tbl<'a, 's> {
    r: &'a Reader<'s>,
    entries: Vec<(&'a Key, &'a Item)>,
    span: Option<Range<usize>>,
    pub what: String,
    known: RefCell<Vec<&'static str>>,
}

impl<'a, 's> Tbl<'a, 's> {
    pub fn reader(&self) -> &'a Reader<'s> {
        self.r
    }

    /// The item under `key`, marking the key as known.
    pub fn get(&self, key: &'static str) -> Option<&'a Item> {
        self.known.borrow_mut().push(key);
        self.entries
            .iter()
            .find(|(k, _)| k.get() == key)
            .map(|(_, item)| *item)
    }

    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get() == key)
            .and_then(|(k, item)| k.span().or_else(|| item.span()))
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.get() == key)
    }

    fn wrong_type(&self, key: &str, item: &Item, expected: &str) {
        self.r.error(
            item.span().or_else(|| self.key_span(key)),
            format!(
                "wrong type for `{key}` in {}: expected {expected}, found {}",
                self.what,
                type_name(item)
            ),
        );
    }

    /// Reports a missing required key at the table's position.
    pub fn missing(&self, key: &str, hint: &str) {
        self.r.error(
            self.span.clone(),
            format!("missing required key `{key}` in {}: {hint}", self.what),
        );
    }

    pub fn str(&self, key: &'static str) -> Option<(String, Option<Range<usize>>)> {
        let item = self.get(key)?;
        match item.as_str() {
            Some(s) => Some((s.to_string(), item.span())),
            None => {
                self.wrong_type(key, item, "a string");
                None
            }
        }
    }

    pub fn string(&self, key: &'static str) -> Option<String> {
        self.str(key).map(|(s, _)| s)
    }

    /// A file the agent reads when it starts (a password, a certificate),
    /// relative to `base` (the config's directory). One that is missing, or
    /// a directory, is reported here, at its value, so that `check-config`
    /// finds what would otherwise stop the agent at start. Whether it can be
    /// read is not checked: `check-config` may run as another user than the
    /// agent (a CI job against root-only secrets), and opening a FIFO would
    /// block.
    pub fn file_to_read(&self, key: &'static str, base: &Path) -> Option<PathBuf> {
        let (name, span) = self.str(key)?;
        let path = base.join(&name);
        let problem = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(e.to_string()),
            Ok(m) if m.is_dir() => Some("it is a directory".to_string()),
            _ => None,
        };
        if let Some(why) = problem {
            self.r.error(
                span,
                format!(
                    "cannot read `{key}` {} in {}: {why}; the agent reads it at start",
                    path.display(),
                    self.what
                ),
            );
        }
        Some(path)
    }

    pub fn bool(&self, key: &'static str) -> Option<bool> {
        let item = self.get(key)?;
        match item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(key, item, "true or false");
                None
            }
        }
    }

    pub fn uint(&self, key: &'static str) -> Option<u64> {
        let item = self.get(key)?;
        match item.as_integer() {
            Some(n) if n >= 0 => Some(n as u64),
            Some(n) => {
                self.r.error(
                    item.span(),
                    format!("invalid `{key}` in {}: {n} is negative; expected a whole number of 0 or more", self.what),
                );
                None
            }
            None => {
                self.wrong_type(key, item, "a whole number");
                None
            }
        }
    }

    pub fn duration(&self, key: &'static str) -> Option<Duration> {
        let item = self.get(key)?;
        match item.as_str() {
            Some(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.r
                        .error(item.span(), format!("{e} (in `{key}` of {})", self.what));
                    None
                }
            },
            None => {
                self.wrong_type(key, item, "a duration string such as \"10s\"");
                None
            }
        }
    }

    pub fn size(&self, key: &'static str) -> Option<u64> {
        let item = self.get(key)?;
        if let Some(n) = item.as_integer() {
            if n >= 0 {
                return Some(n as u64);
            }
        }
        match item.as_str() {
            Some(s) => match parse_size(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.r
                        .error(item.span(), format!("{e} (in `{key}` of {})", self.what));
                    None
                }
            },
            None => {
                self.wrong_type(key, item, "a size string such as \"512MiB\"");
                None
            }
        }
    }

    /// A string that must be one of `choices`.
    pub fn choice(&self, key: &'static str, choices: &[&str]) -> Option<String> {
        let (s, span) = self.str(key)?;
        if choices.contains(&s.as_str()) {
            Some(s)
        } else {
            let list = choices
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.r.error(
                span,
                format!(
                    "invalid `{key}` in {}: \"{s}\"; expected one of {list}",
                    self.what
                ),
            );
            None
        }
    }

    /// An array of strings; each element's position is kept.
    pub fn str_list(&self, key: &'static str) -> Option<Vec<(String, Option<Range<usize>>)>> {
        let item = self.get(key)?;
        let Some(array) = item.as_array() else {
            self.wrong_type(key, item, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push((s.to_string(), v.span())),
                None => self.r.error(
                    v.span(),
                    format!(
                        "wrong type in `{key}` of {}: expected a string, found {}",
                        self.what,
                        type_name(&Item::Value(v.clone()))
                    ),
                ),
            }
        }
        Some(out)
    }

    /// A command: a string (run by `/bin/sh -c`) or an array of strings (argv).
    pub fn command(&self, key: &'static str) -> Option<Vec<String>> {
        let item = self.get(key)?;
        let has_nul = item.as_str().is_some_and(|s| s.contains('\0'))
            || item.as_array().is_some_and(|a| {
                a.iter()
                    .any(|v| v.as_str().is_some_and(|s| s.contains('\0')))
            });
        if has_nul {
            self.r.error(
                item.span(),
                format!("invalid `{key}` in {}: contains a NUL character", self.what),
            );
            return None;
        }
        if let Some(s) = item.as_str() {
            if s.trim().is_empty() {
                self.r.error(
                    item.span(),
                    format!("invalid `{key}` in {}: the command is empty", self.what),
                );
                return None;
            }
            return Some(vec!["/bin/sh".into(), "-c".into(), s.to_string()]);
        }
        if item.is_array() {
            let list = self.str_list(key)?;
            if list.is_empty() {
                self.r.error(
                    item.span(),
                    format!("invalid `{key}` in {}: the command is empty", self.what),
                );
                return None;
            }
            return Some(list.into_iter().map(|(s, _)| s).collect());
        }
        self.wrong_type(
            key,
            item,
            "a string (run by /bin/sh -c) or an array of strings (argv)",
        );
        None
    }

    /// A table of string values, such as `env = { LANG = "C" }`.
    pub fn string_map(&self, key: &'static str) -> Option<Vec<(String, String)>> {
        let item = self.get(key)?;
        let t = self.r.table(item, format!("`{key}` of {}", self.what))?;
        let mut out = Vec::new();
        for (k, v) in &t.entries {
            let name = k.get();
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.r.error(
                    k.span(),
                    format!("invalid name `{name}` in `{key}` of {}: environment variable names cannot be empty or contain '=' or NUL", self.what),
                );
                continue;
            }
            match v.as_str() {
                Some(s) if s.contains('\0') => self.r.error(
                    v.span(),
                    format!(
                        "invalid value of `{name}` in `{key}` of {}: contains a NUL character",
                        self.what
                    ),
                ),
                Some(s) => out.push((name.to_string(), s.to_string())),
                None => self.r.error(
                    v.span(),
                    format!(
                        "wrong type for `{}` in `{key}` of {}: expected a string, found {}",
                        k.get(),
                        self.what,
                        type_name(v)
                    ),
                ),
            }
        }
        Some(out)
    }

    /// A sub-table, such as `limits = { memory = "200MiB" }` or `[service.limits]`.
    pub fn table(&self, key: &'static str) -> Option<Tbl<'a, 's>> {
        self.table_named(key, format!("`{key}` of {}", self.what))
    }

    /// A sub-table named `what` in messages (e.g. `[agent]` for a top-level table).
    pub fn table_named(&self, key: &'static str, what: String) -> Option<Tbl<'a, 's>> {
        let item = self.get(key)?;
        self.r.table(item, what)
    }

    /// The string under `key` without marking it known or checking its type
    /// (for cross-checks that must see names even in broken tables).
    pub fn peek_str(&self, key: &str) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|(k, _)| k.get() == key)
            .and_then(|(_, item)| item.as_str())
    }

    /// Elements of an array of tables (`[[service]]`), or of an array of inline tables.
    pub fn tables(&self, key: &'static str) -> Vec<&'a toml_edit::Table> {
        let Some(item) = self.get(key) else {
            return Vec::new();
        };
        match item {
            Item::ArrayOfTables(a) => a.iter().collect(),
            other => {
                self.wrong_type(
                    key,
                    other,
                    &format!("an array of tables written as [[{key}]]"),
                );
                Vec::new()
            }
        }
    }

    /// Reports every key that no getter asked for, with the closest valid name.
    pub fn finish(&self) {
        let known = self.known.borrow().clone();
        for (k, item) in &self.entries {
            let name = k.get();
            if known.contains(&name) {
                continue;
            }
            let mut message = format!("unknown key `{name}` in {}", self.what);
            let closest = known
                .iter()
                .map(|cand| (strsim::damerau_levenshtein(name, cand), *cand))
                .filter(|(d, cand)| *d <= 2.max(cand.len() / 3))
                .min();
            if let Some((_, cand)) = closest {
                message.push_str(&format!("; did you mean `{cand}`?"));
            } else if name == "timeout" && self.what.starts_with("[[service]]") {
                message.push_str("; `stop_timeout` is how long a stop waits before SIGKILL, `limits = { wall = \"30m\" }` a run's time limit");
            } else if matches!(name, "cron" | "crontab") && known.contains(&"schedule") {
                message.push_str("; a cron expression is written `schedule = \"0 2 * * *\"`");
            } else if known.contains(&"limits") {
                // What other tools call these keys is a limit here.
                let limit = match name {
                    "timeout" | "time_limit" | "max_time" | "runtime" => Some("wall = \"30m\""),
                    "memory" | "memory_limit" | "max_memory" | "mem" => Some("memory = \"512MiB\""),
                    "cpu" | "cpu_limit" => Some("cpu = \"10m\""),
                    "nofile" | "ulimit" => Some("open_files = 4096"),
                    _ => None,
                };
                if let Some(l) = limit {
                    message.push_str(&format!("; limits are written `limits = {{ {l} }}`"));
                }
            }
            let mut sorted = known.clone();
            sorted.sort_unstable();
            sorted.dedup();
            message.push_str(&format!(" (expected one of: {})", sorted.join(", ")));
            self.r.error(k.span().or_else(|| item.span()), message);
        }
    }
}
