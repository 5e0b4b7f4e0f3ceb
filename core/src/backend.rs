//! The backend table. Each backend crate registers one [`Backend`] with
//! [`register!`](crate::register); the facade links the crates its cargo features name. The core
//! names no backend: everything it knows about one is in its entry.

use crate::Result;
use std::sync::OnceLock;

/// A backend linked into this binary.
#[derive(Debug)]
pub struct Backend {
    /// Name used in packages (`backends/<name>/`) and on the command line.
    pub name: &'static str,
    /// Cargo feature of the `inferox` crate that links it.
    pub feature: &'static str,
    /// Rank when a package lists several backends and the caller names none: lower first.
    pub preference: u32,
    /// What it runs on.
    pub description: &'static str,
    /// Applies [`LoadOptions::threads`](crate::load::LoadOptions::threads) before a load, or
    /// says why it cannot.
    pub threads: fn(usize) -> Result<()>,
    /// What the linked runtime reports about itself (version, devices), when it can say.
    pub runtime: Option<fn() -> String>,
}

inventory::collect!(Backend);

/// Every linked backend, most preferred first.
pub fn backends() -> &'static [&'static Backend] {
    static SORTED: OnceLock<Vec<&'static Backend>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v: Vec<&'static Backend> = inventory::iter::<Backend>().collect();
        v.sort_by_key(|b| (b.preference, b.name));
        v
    })
}

/// The linked backend called `name`.
pub fn get(name: &str) -> Option<&'static Backend> {
    backends().iter().copied().find(|b| b.name == name)
}

/// Position of `name` in the preference order (backends not linked come last).
pub fn preference(name: &str) -> usize {
    backends()
        .iter()
        .position(|b| b.name == name)
        .unwrap_or(usize::MAX)
}

/// Names of the linked backends, most preferred first.
pub fn names() -> Vec<&'static str> {
    backends().iter().map(|b| b.name).collect()
}

/// For backends that take their thread count per model, at load: nothing to do up front.
pub fn per_model_threads(_: usize) -> Result<()> {
    Ok(())
}
