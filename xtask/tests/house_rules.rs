//! House rules of the repository, run by `cargo xtask test` (part of
//! `cargo test --workspace`). Each test prints exactly what breaks its rule:
//!
//! 1. no `.rs` file under `vip-agent/` or the test crates (`tests/**`) is over
//!    [`MAX_LINES`] lines;
//! 2. no import cycle between the top-level modules of `vip-agent` or of a
//!    test crate (from `crate::...` paths, `use` or inline);
//! 3. the agent's tests do not build the benchmark's plotting: no `plotters*`
//!    package in `cargo tree -p vip-agent -e normal,build,dev` (`-e dev` alone
//!    lists only vip-agent's direct dev-dependencies, not what they pull in);
//! 4. no deprecated YAML crate (`serde_yaml`) in any `Cargo.lock`.
//!
//! Paths come from `CARGO_MANIFEST_DIR`, so it runs the same in a fresh clone.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every file under `dir` whose name ends with `suffix`, sorted, skipping
/// build output (`target`) and hidden folders.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    todo.push(path);
                }
            } else if name.ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn fail_with(rule: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "house rule broken: {rule}\n  {}\n({} violation(s))",
        violations.join("\n  "),
        violations.len()
    );
}

#[test]
fn no_source_file_over_the_line_limit() {
    let mut violations = Vec::new();
    for dir in ["vip-agent", "tests"] {
        for file in files(&root().join(dir), ".rs") {
            let lines = read(&file).lines().count();
            if lines > MAX_LINES {
                violations.push(format!("{}: {lines} lines", relative(&file)));
            }
        }
    }
    fail_with(
        &format!("no .rs file under vip-agent/ or tests/ over {MAX_LINES} lines"),
        &violations,
    );
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut crates = vec![root().join("vip-agent")];
    crates.extend(
        files(&root().join("tests"), "Cargo.toml")
            .into_iter()
            .filter_map(|manifest| manifest.parent().map(Path::to_path_buf)),
    );
    let mut violations = Vec::new();
    for krate in crates {
        let graph = module_graph(&krate.join("src"));
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            violations.push(format!(
                "{}: {}\n      {}",
                relative(&krate),
                cycle.join(" -> "),
                edges.join("\n      ")
            ));
        }
    }
    fail_with(
        "no import cycle between the top-level modules of a crate",
        &violations,
    );
}

/// Module -> modules it refers to -> where first (`file:line`), for the
/// top-level modules of the crate whose sources are in `src` (its `bin/`
/// folder holds other crates and is left out).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn module_graph(src: &Path) -> Graph {
    let mut owner = BTreeMap::new();
    for file in files(src, ".rs") {
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts = rel.iter().map(|p| p.to_string_lossy().into_owned());
        let first = parts.next().expect("a file name");
        if first == "bin" || first == "lib.rs" || first == "main.rs" {
            continue;
        }
        owner.insert(file, first.trim_end_matches(".rs").to_owned());
    }
    let modules: BTreeSet<&String> = owner.values().collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| ((*m).clone(), BTreeMap::new()))
        .collect();
    for (file, module) in &owner {
        let code = strip_comments_and_strings(&read(file));
        for (line, target) in crate_references(&code) {
            if target != *module && modules.contains(&target) {
                graph
                    .get_mut(module)
                    .expect("every module is a node")
                    .entry(target)
                    .or_insert_with(|| format!("{}:{line}", relative(file)));
            }
        }
    }
    graph
}

/// `code` with comments, string and char literals blanked out (newlines kept,
/// so line numbers still hold): doc links and messages are not imports.
fn strip_comments_and_strings(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let skip = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if rest[0] == 'r' && matches!(rest.get(1), Some('"' | '#')) {
            // Raw string r"..." or r#"..."#.
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) == Some(&'"') {
                let end: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body = 2 + hashes;
                rest[body..]
                    .windows(end.len())
                    .position(|w| w == end.as_slice())
                    .map_or(rest.len(), |p| body + p + end.len())
            } else {
                0
            }
        } else if rest[0] == '"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != '"' {
                j += if rest[j] == '\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            rest[2..]
                .iter()
                .position(|&c| c == '\'')
                .map_or(rest.len(), |p| p + 3)
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            3
        } else {
            0
        };
        if skip == 0 {
            out.push(rest[0]);
            i += 1;
        } else {
            out.extend(rest[..skip].iter().map(|&c| blank(c)));
            i += skip;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// (line, first path segment) of every `crate::x` path in `code`, including
/// each branch of `crate::{a, b::c}`. `$crate::` (macros) is not ours.
fn crate_references(code: &str) -> Vec<(usize, String)> {
    let mut refs = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == '$')
        {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = code[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            refs.extend(group_branches(group).into_iter().map(|b| (line, b)));
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                refs.push((line, name));
            }
        }
    }
    refs
}

/// First identifier of each top-level branch of a `{...}` group (the text
/// after the `{`).
fn group_branches(group: &str) -> Vec<String> {
    let mut branches = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut done_with_branch = false;
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                done_with_branch = true;
            }
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if !current.is_empty() {
                    branches.push(std::mem::take(&mut current));
                }
                done_with_branch = false;
            }
            c if depth == 0 && !done_with_branch && is_ident(c) => current.push(c),
            c if depth == 0 && !current.is_empty() && !c.is_whitespace() => {
                done_with_branch = true;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        branches.push(current);
    }
    branches.retain(|b| b != "self");
    branches
}

/// One cycle (first node repeated at the end) per strongly connected
/// component of more than one module: the shortest one through its first node.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(node) = todo.pop() {
            for next in graph[&node].keys() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut reported = BTreeSet::new();
    let mut found = Vec::new();
    for start in graph.keys() {
        if reported.contains(start) || !reachable[start].contains(start) {
            continue;
        }
        // The component: nodes reachable from `start` that reach it back.
        let component: BTreeSet<String> = reachable[start]
            .iter()
            .filter(|n| reachable[*n].contains(start))
            .cloned()
            .collect();
        // Shortest path start -> ... -> start inside the component (BFS).
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = VecDeque::from([start.clone()]);
        'search: while let Some(node) = queue.pop_front() {
            for next in graph[&node].keys() {
                if next == start {
                    previous.insert(start.clone(), node.clone());
                    break 'search;
                }
                if component.contains(next) && !previous.contains_key(next) {
                    previous.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut cycle = vec![start.clone()];
        let mut node = previous[start].clone();
        while node != *start {
            cycle.push(node.clone());
            node = previous[&node].clone();
        }
        cycle.push(start.clone());
        cycle.reverse();
        reported.extend(component);
        found.push(cycle);
    }
    found
}

#[test]
fn agent_tests_do_not_build_plotters() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(root())
        .args(["tree", "-p", "vip-agent", "-e", "normal,build,dev"])
        .args(["--prefix", "depth"])
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    // (depth, package) per line; a line's parent is the nearest line above
    // it with depth one less.
    let lines: Vec<(usize, &str)> = tree
        .lines()
        .filter_map(|l| {
            let digits = l.chars().take_while(char::is_ascii_digit).count();
            Some((
                l[..digits].parse().ok()?,
                l[digits..].trim_end_matches(" (*)"),
            ))
        })
        .collect();
    let mut violations = BTreeSet::new();
    for (i, &(depth, package)) in lines.iter().enumerate() {
        if !package.starts_with("plotters") {
            continue;
        }
        let mut chain = vec![package];
        let mut want = depth;
        for &(d, p) in lines[..i].iter().rev() {
            if want > 0 && d == want - 1 {
                chain.push(p);
                want = d;
            }
        }
        chain.reverse();
        // Report where plotters comes in, not each of its own dependencies.
        if chain[..chain.len() - 1]
            .iter()
            .any(|p| p.starts_with("plotters"))
        {
            continue;
        }
        let names: Vec<&str> = chain
            .iter()
            .map(|p| p.split(" (").next().unwrap_or(p))
            .collect();
        violations.insert(names.join(" -> "));
    }
    fail_with(
        "`cargo tree -p vip-agent -e normal,build,dev` has no plotters",
        &violations.into_iter().collect::<Vec<_>>(),
    );
}

#[test]
fn no_deprecated_yaml_crate_in_any_lock_file() {
    let mut violations = Vec::new();
    for lock in files(&root(), "Cargo.lock") {
        let text = read(&lock);
        let mut name = None;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"'));
            } else if let Some(v) = line.strip_prefix("version = ")
                && name == Some("serde_yaml")
            {
                violations.push(format!(
                    "{}: serde_yaml {}",
                    relative(&lock),
                    v.trim_matches('"')
                ));
            }
        }
    }
    fail_with(
        "no serde_yaml (deprecated; use serde-saphyr) in a Cargo.lock",
        &violations,
    );
}

#[test]
fn the_module_parser_sees_through_groups_comments_and_strings() {
    let code = strip_comments_and_strings(
        "use crate::{a::X, b, self, c::{d, e}};\n\
         // use crate::commented;\n\
         let s = \"crate::in_string\"; let r = r#\"crate::raw\"#; let q = '\"';\n\
         let x = crate::f::g(); $crate::macro_only!(); /* crate::block */\n",
    );
    let refs = crate_references(&code);
    assert_eq!(
        refs,
        [
            (1, "a".to_owned()),
            (1, "b".to_owned()),
            (1, "c".to_owned()),
            (4, "f".to_owned()),
        ]
    );
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(n, to)| {
        (
            n.to_owned(),
            to.into_iter()
                .map(|t| (t.to_owned(), String::new()))
                .collect(),
        )
    })
    .collect();
    assert_eq!(cycles(&graph), [["a", "b", "c", "a"]]);
}
