//! The shape of the source: no file under `src/` over 700 lines, and no import circle between
//! its files, so that the arrows between modules run one way (down) and a newcomer can read
//! the house from the top.
//!
//! A file's imports are the paths it names outside comments: `crate::…` (and, in the
//! binary's files, `ecs_patchd::…` into the library), `super::…`, `self::…`, and paths
//! through the child modules it declares. Each resolves to the file of the longest module
//! prefix it names. A parent declaring a child (`mod x;`) is no import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;

/// The longest a source file may be.
const MAX_LINES: usize = 700;

/// A source file and the module path it defines, in the library (`lib`) or the binary (`bin`).
struct Module {
    file: PathBuf,
    krate: &'static str,
    path: Vec<String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file under `src/` with its crate and module path (`src/cycle/drain.rs` is
/// `lib::cycle::drain`; the binary is `main.rs` and `cli/`).
fn modules() -> Vec<Module> {
    let mut files = Vec::new();
    common::rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(src()).unwrap().with_extension("");
            let mut path: Vec<String> = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if path.last().is_some_and(|last| last == "mod" || last == "lib" || last == "main") {
                path.pop();
            }
            let krate =
                if path.first().is_some_and(|p| p == "cli") || relative == Path::new("main") { "bin" } else { "lib" };
            Module { file, krate, path }
        })
        .collect()
}

/// The text of a file without its comments and the contents of its string literals (a
/// `'"'` character literal starts no string).
fn code_of(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        let mut in_string = false;
        let mut escaped = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if in_string {
                if c == '"' && !escaped {
                    in_string = false;
                    code.push('"');
                }
                escaped = c == '\\' && !escaped;
            } else if c == '\'' && chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'\'') {
                i += 2;
            } else if c == '"' {
                in_string = true;
                code.push('"');
            } else if c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            } else {
                code.push(c);
            }
            i += 1;
        }
        code.push('\n');
    }
    code
}

/// The paths a file names: each a list of segments, as written (`crate`, `super`, ...).
/// Grouped imports (`use a::{b, c::d}`) give one path per member.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        if !ident(chars[i]) || (i > 0 && (ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && ident(chars[j]) {
                j += 1;
            }
            segments.push(chars[start..j].iter().collect::<String>());
            if j + 2 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' && ident(chars[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        if j + 2 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' && chars[j + 2] == '{' {
            // A group: every member's first segments, after the prefix.
            let mut depth = 0;
            let mut k = j + 2;
            let mut member = String::new();
            while k < chars.len() {
                match chars[k] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        push_member(&segments, &member, &mut paths);
                        member.clear();
                    }
                    c if depth == 1 => member.push(c),
                    _ => {}
                }
                k += 1;
            }
            push_member(&segments, &member, &mut paths);
            i = k;
        } else if segments.len() > 1 {
            paths.push(segments);
            i = j;
        } else {
            i = j;
        }
    }
    paths
}

fn push_member(prefix: &[String], member: &str, paths: &mut Vec<Vec<String>>) {
    let member: Vec<String> = member
        .split("::")
        .map(|s| s.trim().trim_start_matches('{').trim().to_string())
        .take_while(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect();
    let mut path = prefix.to_vec();
    path.extend(member);
    paths.push(path);
}

/// The child modules a file declares (`mod x;`, `pub mod x;`).
fn children(code: &str) -> BTreeSet<String> {
    code.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("mod ").or_else(|| l.split_once(" mod ").map(|(_, r)| r))?;
            rest.strip_suffix(';').map(|name| name.trim().to_string())
        })
        .collect()
}

/// Which file each file imports from (other than itself).
fn imports(modules: &[Module]) -> BTreeMap<usize, BTreeSet<usize>> {
    let by_path: BTreeMap<(&str, &[String]), usize> =
        modules.iter().enumerate().map(|(n, m)| ((m.krate, m.path.as_slice()), n)).collect();
    let resolve = |krate: &'static str, absolute: &[String]| -> Option<usize> {
        (0..=absolute.len()).rev().find_map(|len| by_path.get(&(krate, &absolute[..len])).copied())
    };
    let mut edges = BTreeMap::new();
    for (n, module) in modules.iter().enumerate() {
        let code = code_of(&std::fs::read_to_string(&module.file).unwrap());
        let own = children(&code);
        // The module `super` names: the parent of the file's module.
        let parent: Vec<String> = module.path[..module.path.len().saturating_sub(1)].to_vec();
        let mut to = BTreeSet::new();
        for path in paths_in(&code) {
            let (krate, absolute): (&'static str, Vec<String>) = match path[0].as_str() {
                "crate" => (module.krate, path[1..].to_vec()),
                "ecs_patchd" if module.krate == "bin" => ("lib", path[1..].to_vec()),
                "self" => (module.krate, [module.path.clone(), path[1..].to_vec()].concat()),
                "super" => {
                    let mut base = parent.clone();
                    let mut rest = &path[1..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    (module.krate, [base, rest.to_vec()].concat())
                }
                first if own.contains(first) => (module.krate, [module.path.clone(), path.clone()].concat()),
                _ => continue,
            };
            if let Some(target) = resolve(krate, &absolute)
                && target != n
            {
                to.insert(target);
            }
        }
        edges.insert(n, to);
    }
    edges
}

#[test]
fn no_source_file_is_over_700_lines() {
    let long: Vec<String> = modules()
        .iter()
        .filter_map(|m| {
            let lines = std::fs::read_to_string(&m.file).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", m.file.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn no_two_source_files_import_each_other_even_through_others() {
    let modules = modules();
    let edges = imports(&modules);
    let name = |n: usize| modules[n].file.strip_prefix(src()).unwrap().display().to_string();
    // Depth-first search for a back edge; each circle found is reported by its files.
    let mut state = vec![0u8; modules.len()]; // 0 unseen, 1 on the stack, 2 done
    let mut circles = Vec::new();
    fn visit(
        n: usize,
        edges: &BTreeMap<usize, BTreeSet<usize>>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        circles: &mut Vec<Vec<usize>>,
    ) {
        state[n] = 1;
        stack.push(n);
        for &next in &edges[&n] {
            match state[next] {
                0 => visit(next, edges, state, stack, circles),
                1 => {
                    let from = stack.iter().position(|&s| s == next).unwrap();
                    circles.push(stack[from..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state[n] = 2;
    }
    for n in 0..modules.len() {
        if state[n] == 0 {
            visit(n, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    let shown: Vec<String> =
        circles.iter().map(|c| c.iter().map(|&n| name(n)).collect::<Vec<_>>().join(" -> ")).collect();
    assert!(shown.is_empty(), "import circles:\n{}", shown.join("\n"));
}

#[test]
fn the_checker_sees_imports_through_groups_and_super() {
    let code = code_of(
        "use crate::a::{b::C, d};\n// use crate::not::this;\nlet x = super::e::f();\nlet y = \"crate::not::that\";\n",
    );
    let paths = paths_in(&code);
    let wanted: Vec<Vec<String>> = [&["crate", "a", "b", "C"][..], &["crate", "a", "d"], &["super", "e", "f"]]
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(paths, wanted);
}
