//! The documentation covers what banger offers: every command of the CLI is in docs/cli.md and
//! every route of the daemon's OpenAPI document is in docs/api.md. A command or route added
//! without its documentation fails here. (Configuration keys are checked next to the
//! configuration's parser, in banger-daemon.)

use clap::CommandFactory;
use utoipa::OpenApi;

const CLI_DOC: &str = include_str!("../../../docs/cli.md");
const API_DOC: &str = include_str!("../../../docs/api.md");

/// Every command, as the words after `banger` (`["vm", "snapshot"]`), help excluded.
fn commands() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_owned());
            if sub.has_subcommands() {
                walk(sub, path, out);
            } else {
                out.push(path.clone());
            }
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&banger_cli::cli::Cli::command(), &mut Vec::new(), &mut out);
    out
}

/// Whether the synopsis of docs/cli.md has `banger GROUP ... SUB` (alternatives are written
/// `a | b | c` on one `banger GROUP` line).
fn in_synopsis(words: &[String]) -> bool {
    let (first, rest) = words.split_first().unwrap();
    CLI_DOC.lines().any(|line| {
        let line = line.trim_start();
        let Some(after) = line.strip_prefix(&format!("banger {first}")) else {
            return false;
        };
        if !after.is_empty() && !after.starts_with(' ') {
            return false;
        }
        let tokens: Vec<&str> = after
            .split(|c: char| c.is_whitespace() || c == '|' || c == '[' || c == ']')
            .filter(|t| !t.is_empty())
            .collect();
        rest.iter().all(|word| tokens.contains(&word.as_str()))
    })
}

#[test]
fn every_command_is_in_docs_cli_md() {
    let commands = commands();
    assert!(commands.len() > 20, "{commands:?}");
    let missing: Vec<String> = commands
        .iter()
        .filter(|words| !in_synopsis(words))
        .map(|words| format!("banger {}", words.join(" ")))
        .collect();
    assert!(
        missing.is_empty(),
        "commands missing from docs/cli.md's synopsis: {missing:?}"
    );
}

#[test]
fn every_route_is_in_docs_api_md() {
    let doc = banger_daemon::api::ApiDoc::openapi();
    let mut missing = Vec::new();
    for (path, item) in &doc.paths.paths {
        // A route is written in full, or as `/last` after its parent on the same line.
        let last = path.rsplit('/').next().unwrap();
        let written = API_DOC.contains(&format!("`{path}"))
            || API_DOC.contains(&format!(" {path}"))
            || API_DOC.lines().any(|line| {
                line.contains(&format!("`/{last}`")) && {
                    let parent = &path[..path.len() - last.len() - 1];
                    line.contains(parent)
                }
            });
        if !written {
            let methods: Vec<&str> = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, has)| has.then_some(m))
            .collect();
            missing.push(format!("{} {path}", methods.join(",")));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from docs/api.md: {missing:?}"
    );
}
