//! Running external programs with a time limit, and describing their failures.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How many lines of output a failure message quotes.
const TAIL_LINES: usize = 8;

/// What a finished program left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// The last lines of stdout and stderr together, for error messages.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> =
            self.stdout.lines().chain(self.stderr.lines()).filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n  ")
    }
}

/// Why a program could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started at all.
    #[error("`{command}` could not be started: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The program ran longer than allowed and was killed.
    #[error("`{command}` did not finish within {} and was killed", humantime::format_duration(*.limit))]
    TimedOut {
        /// The command line.
        command: String,
        /// The time limit.
        limit: Duration,
    },
}

/// Runs `argv` (program first) with extra environment `env`, killing it after `limit`.
///
/// Its output goes to unnamed temporary files, not pipes: a program that outlives the
/// daemon (killed, or stopped by systemd) must not die of a closed pipe halfway through a
/// package transaction.
pub async fn run(argv: &[String], env: &[(&str, &str)], limit: Duration) -> Result<Output, RunError> {
    let command_line = display(argv);
    let spawn_error = |source| RunError::Spawn { command: command_line.clone(), source };
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| spawn_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")))?;
    let stdout = tempfile::tempfile().map_err(spawn_error)?;
    let stderr = tempfile::tempfile().map_err(spawn_error)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout.try_clone().map_err(spawn_error)?))
        .stderr(Stdio::from(stderr.try_clone().map_err(spawn_error)?))
        // Its own process group: a Ctrl-C at the terminal reaches the daemon, which decides
        // (it lets a package transaction finish), not the child directly.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(spawn_error)?;
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => return Err(spawn_error(source)),
        Err(_) => return Err(RunError::TimedOut { command: command_line, limit }),
    };
    Ok(Output { code: status.code(), stdout: read_all(stdout), stderr: read_all(stderr) })
}

/// Everything written to `file` from its start, lossily decoded.
fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    let _ = file.rewind().and_then(|()| file.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The command line as a person would type it (for messages).
pub fn display(argv: &[String]) -> String {
    argv.join(" ")
}

/// A one-paragraph description of a failed run: command, exit code and last output lines.
pub fn failure(argv: &[String], output: &Output) -> String {
    let code = output.code.map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
    let tail = output.tail();
    if tail.is_empty() {
        format!("`{}` failed with {code} and printed nothing", display(argv))
    } else {
        format!("`{}` failed with {code}; last output:\n  {tail}", display(argv))
    }
}

/// The standard output of a run that exited 0; otherwise why not (its failure, or what kept
/// it from finishing). For probes of a tool that may be missing or not set up.
pub fn answer<E: std::fmt::Display>(argv: &[String], run: Result<Output, E>) -> Result<String, String> {
    match run {
        Ok(output) if output.code == Some(0) => Ok(output.stdout),
        Ok(output) => Err(failure(argv, &output)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let cmd = argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
        let output = run(&cmd, &[("X", "1")], Duration::from_secs(5)).await.unwrap();
        assert_eq!(output.code, Some(3));
        assert_eq!(output.stdout, "out\n");
        let message = failure(&cmd, &output);
        assert!(message.contains("exit code 3") && message.contains("out\n  err"), "{message}");
    }

    #[tokio::test]
    async fn kills_a_program_that_runs_too_long() {
        let cmd = argv(&["sleep", "30"]);
        let err = run(&cmd, &[], Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, RunError::TimedOut { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(&argv(&["/nonexistent/prog"]), &[], Duration::from_secs(1)).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_is_the_output_of_a_run_that_exited_0_and_otherwise_why_not() {
        let limit = Duration::from_secs(5);
        let ok = argv(&["sh", "-c", "echo yes"]);
        assert_eq!(answer(&ok, run(&ok, &[], limit).await), Ok("yes\n".to_string()));
        let refused = argv(&["sh", "-c", "echo no >&2; exit 1"]);
        let why = answer(&refused, run(&refused, &[], limit).await).unwrap_err();
        assert!(why.contains("exit code 1") && why.contains("no"), "{why}");
        let missing = argv(&["/nonexistent/prog"]);
        let why = answer(&missing, run(&missing, &[], limit).await).unwrap_err();
        assert!(why.contains("could not be started"), "{why}");
    }

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let output =
            Output { code: Some(1), stdout: (1..=20).map(|i| format!("line {i}\n")).collect(), stderr: String::new() };
        assert!(output.tail().starts_with("line 13"));
    }
}
