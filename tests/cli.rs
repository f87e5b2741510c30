//! Commands that need no AWS stand-in.

mod common;

use std::process::Command;

fn ecs_patchd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ecs-patchd")).args(args).env_remove("ECS_PATCHD_CONFIG").output().unwrap()
}

#[test]
fn config_prints_the_effective_settings_as_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.toml");
    std::fs::write(&input, "[drain]\ntimeout = \"45m\"\n[packages]\nreboot = \"always\"\n").unwrap();
    let first = ecs_patchd(&["--config", input.to_str().unwrap(), "config"]);
    assert!(first.status.success(), "{first:?}");
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(text.contains("timeout = \"45m\""), "{text}");
    assert!(text.contains("reboot = \"always\""), "{text}");
    assert!(text.contains("reboot_command = [\"systemctl\", \"reboot\"]"), "defaults are filled in: {text}");

    let output = dir.path().join("out.toml");
    std::fs::write(&output, &text).unwrap();
    let second = ecs_patchd(&["--config", output.to_str().unwrap(), "config"]);
    assert_eq!(String::from_utf8(second.stdout).unwrap(), text, "the printed configuration reads back the same");
}

#[test]
fn status_without_any_cycle_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, format!("[paths]\nstate_dir = \"{}\"\n", dir.path().join("state").display())).unwrap();
    let out = ecs_patchd(&["--config", config.to_str().unwrap(), "status"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "daemon     not running\nno cycle has run yet\n");
}

#[test]
fn the_packaged_example_configuration_is_valid_and_documents_the_defaults() {
    let packaged = common::repo_path("packaging/config.toml");
    let text = std::fs::read_to_string(&packaged).unwrap();
    // Uncommented, it is exactly the defaults.
    let dir = tempfile::tempdir().unwrap();
    let uncommented = dir.path().join("config.toml");
    std::fs::write(
        &uncommented,
        text.lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let defaults = ecs_patchd(&["--config", "/dev/null", "config"]);
    let from_example = ecs_patchd(&["--config", uncommented.to_str().unwrap(), "config"]);
    assert!(from_example.status.success(), "{}", String::from_utf8_lossy(&from_example.stderr));
    assert_eq!(from_example.stdout, defaults.stdout, "packaging/config.toml is out of date: regenerate it");
    // As shipped (all commented out), it loads too.
    assert!(ecs_patchd(&["--config", packaged.to_str().unwrap(), "config"]).status.success());
}

#[test]
fn the_readmes_exit_codes_are_the_ones_the_program_states() {
    let help = String::from_utf8(ecs_patchd(&["--help"]).stdout).unwrap();
    let stated: Vec<(String, String)> = help
        .split_once("Exit status:\n")
        .expect("--help ends with the exit codes")
        .1
        .lines()
        .map(|l| {
            let (code, meaning) = l.trim_start().split_once(' ').unwrap();
            (code.to_string(), meaning.trim_start().to_string())
        })
        .collect();
    let readme = std::fs::read_to_string(common::repo_path("README.md")).unwrap();
    let table = readme.split_once("| exit code | meaning |\n| --- | --- |\n").expect("the README's table").1;
    let written: Vec<(String, String)> = table
        .lines()
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            let (code, meaning) = l.trim_matches(|c| c == '|' || c == ' ').split_once(" | ").unwrap();
            (code.to_string(), meaning.to_string())
        })
        .collect();
    assert_eq!(stated.len(), 5, "{help}");
    assert_eq!(written, stated, "the README's exit codes differ from src/cli/exit.rs");
}
