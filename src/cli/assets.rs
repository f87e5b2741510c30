//! The files packages install beside the binary, generated from the command-line definition
//! so they never drift from it: a man page per command (section 8, system administration)
//! and bash and zsh completions. `scripts/package` runs `ecs-patchd assets DIR`.

use std::fs;
use std::path::Path;

use clap_complete::Shell;

use ecs_patchd::error::{Error, Result};

/// The version the man pages and completions name: the crate's, as `--version` prints it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes `DIR/man/*.8`, `DIR/completions/ecs-patchd.bash` and `DIR/completions/_ecs-patchd`.
pub fn write(command: clap::Command, dir: &Path) -> Result<()> {
    let failed =
        |what: &str, e: std::io::Error| Error::Host(format!("cannot write the {what} under {}: {e}", dir.display()));
    let man = dir.join("man");
    let completions = dir.join("completions");
    for sub in [&man, &completions] {
        fs::create_dir_all(sub).map_err(|e| failed("directories", e))?;
    }
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let source = format!("ecs-patchd {VERSION}");
    man_pages(command.clone(), &source, &man).map_err(|e| failed("man pages", e))?;
    let mut visible = visible_only(&command);
    for shell in [Shell::Bash, Shell::Zsh] {
        clap_complete::generate_to(shell, &mut visible, "ecs-patchd", &completions)
            .map_err(|e| failed("completions", e))?;
    }
    Ok(())
}

/// The command without its hidden subcommands, which clap_complete would offer.
fn visible_only(command: &clap::Command) -> clap::Command {
    let arguments = command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")).cloned();
    clap::Command::new("ecs-patchd")
        .version(VERSION)
        .args(arguments)
        .subcommands(command.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// One page per command and visible subcommand (`ecs-patchd-fleet-status.8`), as
/// `clap_mangen::generate_to` writes them, but in section 8: ecs-patchd is run by root to
/// administer the host.
fn man_pages(command: clap::Command, source: &str, dir: &Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        man_pages(sub, source, dir)?;
    }
    clap_mangen::Man::new(command)
        .section("8")
        .manual("System Administration")
        .source(source.to_string())
        .generate_to(dir)
        .map(drop)
}
