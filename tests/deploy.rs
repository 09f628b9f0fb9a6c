//! The Docker image's build, checked where no container engine or registry is reachable.
//!
//! `docker build` sees only the files its `COPY` lines name, minus what `.dockerignore` leaves
//! out; a file the build needs and the Dockerfile forgets (the `[[bench]]` targets once) fails
//! only there. This test reads the Dockerfile, checks that every `COPY` source is in the build
//! context, assembles the builder stage's files exactly as its `COPY` lines place them, and runs
//! that stage's `RUN` commands in it.
//!
//! The one liberty taken: the release profile is made cheap to compile (no optimisation, no
//! LTO) through `CARGO_PROFILE_RELEASE_*` variables, so CI spends minutes, not a quarter hour;
//! which files the build reads does not depend on it. Its own target directory
//! (`target/docker-context`) keeps the next run incremental.
//!
//! A test binary of its own: cargo runs test binaries one at a time, so this build does not
//! compete with the media tests for the CPU.
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug, Default)]
struct Stage {
    name: String,
    instructions: Vec<Instruction>,
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => format!("stage{}", stages.len()),
            };
            stages.push(Stage {
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(Instruction { keyword, args });
        }
    }
    stages
}

/// A `COPY` from the build context: `(sources, destination)`; `None` for `COPY --from=…`.
fn context_copy(args: &str) -> Option<(Vec<String>, String)> {
    let words: Vec<&str> = args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--from=")) {
        return None;
    }
    let words: Vec<String> = words
        .into_iter()
        .filter(|w| !w.starts_with("--"))
        .map(String::from)
        .collect();
    let (dest, sources) = words.split_last()?;
    Some((sources.to_vec(), dest.clone()))
}

/// `.dockerignore`: the last pattern that matches a path decides; a pattern that matches a
/// directory leaves out everything under it; `*` and `?` match within a segment, `**` any
/// number of segments, `!` brings a path back.
struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                let p = p.trim_start_matches('/').trim_end_matches('/');
                (keep, p.split('/').map(String::from).collect())
            })
            .collect();
        Self { patterns }
    }

    fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (keep, pattern) in &self.patterns {
            // The pattern matches the path or one of its parent directories.
            if (1..=segments.len()).any(|n| matches_segments(pattern, &segments[..n])) {
                excluded = !keep;
            }
        }
        excluded
    }
}

fn matches_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| matches_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, path_rest)) => {
                glob(first.as_bytes(), seg.as_bytes()) && matches_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Copies `src` (relative to the repository) to `dest` the way `COPY` does: a directory's
/// contents into `dest`, a file into `dest/` or as `dest`; what `.dockerignore` excludes stays
/// out.
fn copy_like_docker(ignore: &DockerIgnore, src: &str, dest: &Path, dest_is_dir: bool) {
    let from = Path::new(ROOT).join(src);
    assert!(
        from.exists() && !ignore.excludes(src),
        "the Dockerfile copies {src}, which is not in the build context"
    );
    if from.is_dir() {
        copy_tree(ignore, src, &from, dest);
    } else {
        let target = if dest_is_dir {
            std::fs::create_dir_all(dest).unwrap();
            dest.join(from.file_name().unwrap())
        } else {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            dest.to_path_buf()
        };
        std::fs::copy(&from, target).unwrap();
    }
}

fn copy_tree(ignore: &DockerIgnore, rel: &str, from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel_child = format!("{rel}/{name}");
        if ignore.excludes(&rel_child) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(ignore, &rel_child, &path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn dockerfile() -> Vec<Stage> {
    parse_dockerfile(&std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap())
}

fn dockerignore() -> DockerIgnore {
    DockerIgnore::parse(
        &std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap_or_default(),
    )
}

#[test]
fn dockerignore_patterns_follow_docker() {
    let ignore = DockerIgnore::parse("target\nweb/node_modules\n**/*.log\n!keep.log\n# comment\n");
    assert!(ignore.excludes("target"));
    assert!(ignore.excludes("target/debug/relais"));
    assert!(!ignore.excludes("src/target.rs"));
    assert!(ignore.excludes("web/node_modules/react/index.js"));
    assert!(!ignore.excludes("tests/js/package.json"));
    assert!(ignore.excludes("a/b/c.log"));
    assert!(!ignore.excludes("keep.log"));
}

#[test]
fn every_copy_source_is_in_the_build_context() {
    let ignore = dockerignore();
    let stages = dockerfile();
    assert!(stages.len() >= 2, "{stages:?}");
    for stage in &stages {
        for i in stage.instructions.iter().filter(|i| i.keyword == "COPY") {
            let Some((sources, _)) = context_copy(&i.args) else {
                continue;
            };
            for src in sources {
                let src = src.trim_end_matches('/').trim_start_matches("./");
                assert!(
                    Path::new(ROOT).join(src).exists() && !ignore.excludes(src),
                    "stage {}: COPY {src}: not in the build context",
                    stage.name
                );
            }
        }
    }
}

#[test]
fn the_health_check_asks_relais_for_readyz() {
    let stages = dockerfile();
    let last = stages.last().unwrap();
    let check = last
        .instructions
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("the image has a health check");
    // dash, the image's /bin/sh, has no /dev/tcp; the exec form needs no shell at all.
    assert!(!check.args.contains("/dev/tcp"), "{}", check.args);
    let cmd = check.args.split_once("CMD").map(|(_, c)| c.trim()).unwrap();
    let argv: Vec<String> = serde_json::from_str(cmd).expect("exec form: a JSON array");
    assert_eq!(argv[..2], ["relais", "ready"], "{argv:?}");
}

#[test]
fn the_builder_stage_builds_from_exactly_what_it_copies() {
    let ignore = dockerignore();
    let stages = dockerfile();
    let builder = stages
        .iter()
        .find(|s| {
            s.instructions
                .iter()
                .any(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        })
        .expect("a stage runs cargo build");
    let context = tempfile::tempdir().unwrap();
    let mut workdir = PathBuf::from("/");
    let mut runs = Vec::new();
    for i in &builder.instructions {
        match i.keyword.as_str() {
            "WORKDIR" => workdir = workdir.join(&i.args),
            "COPY" => {
                let (sources, dest) =
                    context_copy(&i.args).expect("the builder copies from the context");
                let dest_is_dir = dest.ends_with('/') || sources.len() > 1 || dest == ".";
                let dest = workdir.join(dest);
                let local = context.path().join(dest.strip_prefix("/").unwrap());
                for src in sources {
                    copy_like_docker(&ignore, src.trim_end_matches('/'), &local, dest_is_dir);
                }
            }
            "RUN" => runs.push((workdir.clone(), i.args.clone())),
            _ => {}
        }
    }
    assert!(!runs.is_empty());
    let target_dir = Path::new(ROOT).join("target").join("docker-context");
    for (dir, run) in runs {
        let cwd = context.path().join(dir.strip_prefix("/").unwrap());
        eprintln!("docker build, stage {}: RUN {run}", builder.name);
        let status = Command::new("sh")
            .arg("-c")
            .arg(&run)
            .current_dir(&cwd)
            .env(
                "CARGO",
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
            .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
            .env_remove("RUSTFLAGS")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "RUN {run} failed in the Dockerfile's build context ({status}); a file it needs \
             is not copied, or .dockerignore leaves it out"
        );
    }
    for bin in ["relais", "relais-load"] {
        assert!(
            target_dir.join("release").join(bin).exists(),
            "the image copies target/release/{bin}"
        );
    }
}
