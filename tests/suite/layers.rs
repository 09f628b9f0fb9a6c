//! The layering of `relais::LAYERS`, checked: every `crate::<module>` path in `src/` names a
//! module listed before the file's own top-level module, except the imports in
//! [`STILL_UPWARDS`], which are today's debts. A new upward import fails; so does a debt that
//! was paid but is still listed (remove it from the list).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Upward imports that remain (from, to): each one is work to do, none may be added.
const STILL_UPWARDS: &[(&str, &str)] = &[];

/// The top-level modules a source text names through `crate::` (also inside `crate::{…}`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // crate::{a, b::c, d::{e, f}}: the first segment of each top-level item.
            let mut depth = 0usize;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(ch);
            }
            out.extend(first_segment(&item));
        } else {
            out.extend(first_segment(after));
        }
        rest = after;
    }
    out
}

fn first_segment(s: &str) -> Option<String> {
    let name: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (from, to) → the files that import upwards.
fn upward_imports() -> BTreeMap<(String, String), Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank = |m: &str| relais::LAYERS.iter().position(|l| *l == m);
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut found: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(top.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let own = rank(&top)
            .unwrap_or_else(|| panic!("src/{rel}: module `{top}` is not in relais::LAYERS"));
        for used in crate_paths(&std::fs::read_to_string(&file).unwrap()) {
            let Some(r) = rank(&used) else { continue };
            if used != top && r > own {
                found
                    .entry((top.clone(), used))
                    .or_default()
                    .push(rel.clone());
            }
        }
    }
    found
}

#[test]
fn paths_are_read_as_rust_writes_them() {
    let text = "use crate::ids::Identity;\nuse crate::{clock::Clock, sfu::{a, b}, store};\n\
                // crate::app in a comment\nlet x = crate::metrics::Metrics::new();";
    let got: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(got, ["clock", "ids", "metrics", "sfu", "store"]);
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let found = upward_imports();
    let known: BTreeSet<(String, String)> = STILL_UPWARDS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = found
        .iter()
        .filter(|(k, _)| !known.contains(*k))
        .map(|((a, b), files)| format!("{a} → {b} (in {})", files.join(", ")))
        .collect();
    assert!(
        new.is_empty(),
        "imports that go up the layering (relais::LAYERS):\n{}",
        new.join("\n")
    );
    let paid: Vec<String> = known
        .iter()
        .filter(|k| !found.contains_key(*k))
        .map(|(a, b)| format!("{a} → {b}"))
        .collect();
    assert!(
        paid.is_empty(),
        "these upward imports are gone: remove them from STILL_UPWARDS:\n{}",
        paid.join("\n")
    );
}

/// The domain and media modules know no transport: no Socket.IO, no HTTP framework. They
/// reach clients through their ports (`messaging::MessagingNotify`, `sfu::SignalingPort`).
#[test]
fn the_core_knows_no_transport() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for module in ["messaging", "sessions", "recording", "sfu", "turn", "store"] {
        let mut files = Vec::new();
        walk(&src.join(module), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for transport in ["socketioxide", "axum", "tower_http", "hyper"] {
                if text.contains(&format!("{transport}::")) {
                    offenders.push(format!(
                        "{} uses {transport}",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The load tool and the test client (`relais-load/`, a crate of their own) use the server
/// crate for what crosses the wire only — ids, tokens (and their configuration), codecs,
/// RTP-level pieces, socket buffers — not its services, transports or state; and inside that
/// crate the test client does not use the load tool.
#[test]
fn the_load_tool_uses_only_the_servers_wire() {
    /// `relais::<path>` prefixes relais-load may name.
    const ALLOWED: &[&str] = &[
        "ids::",
        "wire::",
        "auth::",
        "config::",
        "codec::",
        "udp_buffers::",
        "sfu::peer::rtcp_tap::",
        // a unit test: the synthetic VP8 frames are recordable
        "recording::",
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("relais-load/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    let mut offenders = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().display().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text
            .lines()
            .map(|l| l.find("//").map_or(l, |i| &l[..i]))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in code.match_indices("relais::") {
            let named_by_another_crate = code[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let path = &code[i + "relais::".len()..];
            if !named_by_another_crate && !ALLOWED.iter().any(|a| path.starts_with(a)) {
                let shown: String = path.chars().take_while(|c| !c.is_whitespace()).collect();
                offenders.push(format!("{rel}: relais::{shown}"));
            }
        }
        if rel.starts_with("client/") && code.contains("crate::load") {
            offenders.push(format!("{rel}: the test client uses the load tool"));
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
