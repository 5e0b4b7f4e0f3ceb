//! The supported-model table of the README, generated from the registry: one row per model
//! type, one column per backend this crate can be built with. `tests/readme.rs` fails when the
//! README and the registry drift apart; `inferox list --markdown` prints the table.
//!
//! A build checks the columns it can know: those of the backends it links (and every model
//! type's own columns). The CI's stages link candle, torch and tflite between them, so each
//! cell is checked by one of them.

use crate::backends;
use inferox_core::{backend, registry};

/// Placeholder of a backend column whose backend this build does not link.
pub const NOT_LINKED: &str = "(not linked)";

/// One row of the table: the model type's cells, then one per backend of
/// [`backends::FEATURES`], in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `model_type`.
    pub model_type: String,
    /// Family.
    pub family: String,
    /// Tasks, comma-separated.
    pub tasks: String,
    /// GGUF architectures read, comma-separated, or `—`.
    pub gguf: String,
    /// Per backend: the formats its implementation reads, `—` when it has none, or
    /// [`NOT_LINKED`].
    pub backends: Vec<String>,
}

/// The column titles.
pub fn header() -> Vec<String> {
    let mut h: Vec<String> = ["model_type", "family", "tasks", "GGUF"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend(backends::FEATURES.iter().map(|(name, _)| name.to_string()));
    h
}

/// The rows this build's registry gives.
pub fn rows() -> Vec<Row> {
    let dash = || "—".to_string();
    registry::model_types()
        .iter()
        .map(|m| Row {
            model_type: m.model_type.to_string(),
            family: m.family.to_string(),
            tasks: if m.tasks.is_empty() {
                dash()
            } else {
                m.tasks.join(", ")
            },
            gguf: if m.gguf_architectures.is_empty() {
                dash()
            } else {
                m.gguf_architectures.join(", ")
            },
            backends: backends::FEATURES
                .iter()
                .map(|(name, _)| {
                    if backend::get(name).is_none() {
                        return NOT_LINKED.to_string();
                    }
                    match registry::find(m.model_type, name) {
                        Some(i) => i
                            .formats
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        None => dash(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let header = header();
    let mut out = line(header.clone());
    out += &line(header.iter().map(|_| "---".to_string()).collect());
    for r in rows {
        let mut cells = vec![
            format!("`{}`", r.model_type),
            r.family.clone(),
            r.tasks.clone(),
            r.gguf.clone(),
        ];
        cells.extend(r.backends.iter().cloned());
        out += &line(cells);
    }
    out
}

/// Parses a table written by [`markdown_table`] back into rows.
pub fn parse_table(table: &str) -> Vec<Row> {
    table
        .lines()
        .skip(2)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            Row {
                model_type: cells[0].trim_matches('`').to_string(),
                family: cells.get(1).cloned().unwrap_or_default(),
                tasks: cells.get(2).cloned().unwrap_or_default(),
                gguf: cells.get(3).cloned().unwrap_or_default(),
                backends: cells.iter().skip(4).cloned().collect(),
            }
        })
        .collect()
}

/// `documented` with the cells this build knows replaced by the registry's: the model-type
/// columns of every row, and the columns of linked backends. Rows of model types this build
/// does not register are dropped, and rows it registers but `documented` lacks are added.
pub fn merge(documented: &[Row]) -> Vec<Row> {
    rows()
        .into_iter()
        .map(|mut row| {
            if let Some(old) = documented.iter().find(|d| d.model_type == row.model_type) {
                for (cell, old) in row.backends.iter_mut().zip(&old.backends) {
                    if cell == NOT_LINKED {
                        cell.clone_from(old);
                    }
                }
            }
            row
        })
        .collect()
}
