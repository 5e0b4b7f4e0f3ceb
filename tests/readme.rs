//! The README's supported-model table is generated from the registry and must not drift: this
//! test fails when the model types, their families, tasks or GGUF names, or the formats of any
//! backend this build links differ from what the table says. Columns of backends this build
//! does not link are checked by the CI stage that links them.
//!
//! `INFEROX_UPDATE_README=1 cargo test --test readme` rewrites the table (the cells this build
//! knows) instead of failing.

use inferox::supported::{markdown_table, merge, parse_table};

const START: &str = "<!-- supported-models:start -->\n";
const END: &str = "<!-- supported-models:end -->";

#[test]
fn readme_table_matches_the_registry() {
    inferox::registry::check().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(START)
        .expect("README has the table's start marker")
        + START.len();
    let end = readme[start..].find(END).expect("and its end marker") + start;
    let documented = &readme[start..end];
    let expected = markdown_table(&merge(&parse_table(documented)));
    if documented == expected {
        return;
    }
    if std::env::var_os("INFEROX_UPDATE_README").is_some() {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "README.md's supported-model table differs from the registry of this build.\n\
         README:\n{documented}\nregistry:\n{expected}\n\
         Run `INFEROX_UPDATE_README=1 cargo test --test readme` (with each backend feature) to update it."
    );
}

#[test]
fn the_table_round_trips() {
    let rows = inferox::supported::rows();
    assert_eq!(parse_table(&markdown_table(&rows)), rows);
    assert!(rows.iter().any(|r| r.model_type == "bert"), "{rows:?}");
}
