//! `ARCHITECTURE.md` stays true: every room of its code map exists and every room of `src/` is
//! in it; each room uses no other room of ours than the map allows; every path it names exists;
//! and no file of the repository points readers to a document outside it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn architecture() -> String {
    std::fs::read_to_string(common::root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// The code map: room -> the rooms it may depend on (`None`: everything).
fn code_map(doc: &str) -> BTreeMap<String, Option<BTreeSet<String>>> {
    let section = doc
        .split("## Code map")
        .nth(1)
        .expect("a code map section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let room = cells[0].trim_matches('`').to_string();
        let deps = cells.last().unwrap();
        let allowed = match *deps {
            "everything" => None,
            "nothing" => Some(BTreeSet::new()),
            d => Some(
                d.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect(),
            ),
        };
        map.insert(room, allowed);
    }
    map
}

/// The Rust files of a room: `src/ROOM.rs` or everything under `src/ROOM/`.
fn room_files(room: &str) -> Vec<PathBuf> {
    let src = common::root().join("src");
    let file = src.join(format!("{room}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src.join(room)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The rooms of ours a file names as `crate::ROOM`.
fn rooms_used(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.match_indices("crate::")
        .filter(|(i, _)| !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect()
}

#[test]
fn every_room_of_the_code_map_exists_and_every_room_is_in_it() {
    let map = code_map(&architecture());
    assert!(map.len() >= 8, "code map rows: {map:?}");
    for room in map.keys() {
        assert!(
            !room_files(room).is_empty(),
            "the code map names `{room}`, which is not in src/"
        );
    }
    for e in std::fs::read_dir(common::root().join("src"))
        .unwrap()
        .flatten()
    {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        assert!(
            map.contains_key(&name),
            "src/{name} is not in the code map of ARCHITECTURE.md"
        );
    }
}

#[test]
fn rooms_depend_only_on_what_the_code_map_allows() {
    let map = code_map(&architecture());
    let rooms: BTreeSet<String> = map.keys().cloned().collect();
    let mut wrong = Vec::new();
    for (room, allowed) in &map {
        let Some(allowed) = allowed else { continue };
        for f in room_files(room) {
            for used in rooms_used(&f) {
                if rooms.contains(&used) && used != *room && !allowed.contains(&used) {
                    wrong.push(format!("{} uses crate::{used}", f.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies the code map does not allow:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_live_room_keeps_its_log_state_and_parsers_to_itself() {
    for f in room_files("api") {
        let text = std::fs::read_to_string(&f).unwrap();
        for private in ["live::wal", "live::state", "live::payload"] {
            assert!(!text.contains(private), "{} uses {private}", f.display());
        }
    }
}

#[test]
fn every_path_the_architecture_names_exists() {
    let doc = architecture();
    let prefixes = [
        "src/",
        "tests/",
        "benches/",
        "web-viewer/",
        "styles/",
        "data/",
        "fuzz/",
    ];
    let mut checked = 0;
    for quoted in doc.split('`').skip(1).step_by(2) {
        let path = quoted.trim_end_matches(':');
        if prefixes.iter().any(|p| path.starts_with(p)) || path == "build.rs" {
            assert!(
                common::root().join(path).exists(),
                "ARCHITECTURE.md names {path}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} paths found");
}

#[test]
fn no_file_points_to_a_document_outside_the_repository() {
    // Spelled in pieces so that this file does not name them itself.
    let outside: Vec<String> = ["DESIGN", "CRATES", "STYLE"]
        .iter()
        .map(|n| format!("{n}.md"))
        .chain([format!("{}/shared", "..")])
        .collect();
    let root = common::root();
    let mut dirs = vec![root.clone()];
    let mut found = Vec::new();
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                    dirs.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue; // binary data
            };
            for o in &outside {
                if text.contains(o.as_str()) && !root.join(o).exists() {
                    found.push(format!("{} mentions {o}", p.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
