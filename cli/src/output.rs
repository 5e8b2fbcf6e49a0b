//! What the operator commands print: JSON with `--json` (the API's answer as it came, for
//! scripts), otherwise tables and `field: value` lines for people, coloured only on a
//! terminal (and never with `NO_COLOR` set).

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
    color: bool,
}

/// A column: its header and the JSON pointer of its value in a row.
pub type Column<'a> = (&'a str, &'a str);

impl Output {
    /// JSON when `json`; colour when standard output is a terminal and `NO_COLOR` is unset.
    pub fn new(json: bool) -> Output {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { json, color }
    }

    /// Prints `value` as JSON, or the text `human` makes of it.
    pub fn emit(&self, value: &Value, human: impl FnOnce(&Output) -> String) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(value)?
        } else {
            human(self)
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", text.trim_end())?;
        Ok(())
    }

    /// A table of `rows` (objects) with `columns`; "(none)" when there are no rows.
    pub fn table(&self, rows: &[Value], columns: &[Column<'_>]) -> String {
        if rows.is_empty() {
            return "(none)".to_owned();
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|(_, pointer)| cell(row.pointer(pointer)))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(n, (header, _))| {
                cells
                    .iter()
                    .map(|r| r[n].chars().count())
                    .chain([header.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        let header: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|((h, _), w)| format!("{:<w$}", h.to_uppercase(), w = *w))
            .collect();
        text.push_str(&self.bold(header.join("  ").trim_end()));
        text.push('\n');
        for row in cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| self.status_colour(&format!("{c:<w$}", w = *w)))
                .collect();
            text.push_str(line.join("  ").trim_end());
            text.push('\n');
        }
        text
    }

    /// `label: value` lines for `fields` of `value`, labels aligned.
    pub fn fields(&self, value: &Value, fields: &[Column<'_>]) -> String {
        let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        fields
            .iter()
            .map(|(label, pointer)| {
                format!(
                    "{}  {}",
                    self.bold(&format!(
                        "{:<width$}",
                        format!("{label}:"),
                        width = width + 1
                    )),
                    self.status_colour(&cell(value.pointer(pointer)))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every top-level field of an object as a `key: value` line, in the object's order.
    pub fn pairs(&self, value: &Value) -> String {
        value
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{}  {}", self.bold(&format!("{k}:")), cell(Some(v))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A heading line.
    pub fn bold(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Statuses and verdicts in colour (green good, red bad, yellow waiting).
    fn status_colour(&self, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match text.trim() {
            "MERGED" | "QUEUED" | "VALIDATED" | "validated" | "merged" | "pass" | "ok" => "32",
            "REJECTED" | "rejected" | "blocked" | "fail" | "error" => "31",
            "READY" | "waiting_for_checks" | "warn" | "busy" => "33",
            _ => return text.to_owned(),
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// A JSON value as a cell: strings bare, lists joined, nothing as "-".
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".to_owned(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| cell(Some(i)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_show_missing_values_as_a_dash() {
        let out = Output {
            json: false,
            color: false,
        };
        let rows = [
            json!({"id": "a", "status": "READY", "files": ["x", "y"]}),
            json!({"id": "longer-id", "status": "MERGED", "files": []}),
        ];
        let text = out.table(
            &rows,
            &[("id", "/id"), ("status", "/status"), ("files", "/files")],
        );
        assert_eq!(
            text,
            "ID         STATUS  FILES\na          READY   x, y\nlonger-id  MERGED  -\n"
        );
        assert_eq!(out.table(&[], &[("id", "/id")]), "(none)");
    }
}
