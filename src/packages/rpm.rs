//! dnf (Amazon Linux 2023) and yum (Amazon Linux 2): the same verbs, different spellings.
//!
//! dnf plans with `repoquery --qf` (one record per line, fields of our choosing), never
//! with the columns of `check-update`, which wrap when a name is long. yum (Amazon Linux 2)
//! has no query command without yum-utils: its `check-update` is read as a stream of
//! `name.arch version repo` triples, which a wrapped line does not break.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{
    Cves, PackageManager, PackageUpdate, RebootNeed, RebootProbe, RebootingUpdater, Releases, Survey, Target,
    expect_success, optional, run, run_until_unlocked,
};
use crate::command;
use crate::config::{PackageSettings, ReleasePolicy};
use crate::error::{Error, Result};
use tracing::{info, warn};

/// `check-update` exit code meaning "updates are available".
const UPDATES_AVAILABLE: i32 = 100;
/// dnf exit code meaning "another process holds the package lock".
const DNF_LOCKED: i32 = 200;
/// What dnf (and yum: "Another app is currently holding the yum lock; waiting") print
/// while they wait for a lock; dnf's wording.
const WAITED_FOR_LOCK: &str = "Waiting for process with pid";
/// The package whose version is the Amazon Linux 2023 release.
///
/// AWS: the releasever is "the value in the command line flag, --releasever=latest, if
/// it's used", else "the value that's specified in the override variable file,
/// /etc/dnf/vars/releasever, if it's set", else "the currently installed version of the
/// system-release package" (Deterministic upgrades through versioned repositories).
const RELEASE_PACKAGE: &str = "system-release";
/// One record per package: name, epoch:version-release, build time (UTC, to the minute).
const QUERY_FORMAT: &str = "%{name}|%{evr}|%{buildtime}";

/// Which rpm-family tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmTool {
    /// dnf, with `dnf needs-restarting` from dnf-plugins-core.
    Dnf,
    /// yum, with `needs-restarting` from yum-utils.
    Yum,
}

/// [`PackageManager`] for dnf or yum.
pub struct Rpm {
    tool: RpmTool,
    args: Vec<String>,
    timeout: Duration,
    release: ReleasePolicy,
    security_only: bool,
    exclude: Vec<String>,
    automatic_config: Option<PathBuf>,
}

impl Rpm {
    /// A dnf or yum backend adding `args` to every command; `automatic_config` is
    /// dnf-automatic's configuration (dnf only).
    pub fn new(tool: RpmTool, args: &[String], automatic_config: Option<PathBuf>, settings: &PackageSettings) -> Self {
        Self {
            tool,
            args: args.to_vec(),
            timeout: settings.command_timeout,
            release: settings.release.clone(),
            security_only: settings.security_only,
            exclude: settings.exclude.clone(),
            automatic_config,
        }
    }

    fn program(&self) -> &'static str {
        match self.tool {
            RpmTool::Dnf => "dnf",
            RpmTool::Yum => "yum",
        }
    }

    /// The command line: the program, the configured arguments, the release and the
    /// security filter (the same for every verb, so that the plan, the download, the
    /// install and the verification agree), then `verb` and `packages`.
    fn argv(&self, release: Option<&str>, verb: &[&str], packages: &[String]) -> Vec<String> {
        let mut argv = self.unfiltered(&[]);
        argv.extend(release.map(|r| format!("--releasever={r}")));
        if self.security_only {
            argv.push("--security".into());
        }
        argv.extend(verb.iter().map(|s| s.to_string()));
        argv.extend(super::operands(packages));
        argv
    }

    /// The program, the configured arguments and `verb`: for what is installed, or a
    /// reboot check, which no release or security filter concerns.
    fn unfiltered(&self, verb: &[&str]) -> Vec<String> {
        let mut argv = vec![self.program().to_string()];
        argv.extend(self.args.iter().cloned());
        argv.extend(verb.iter().map(|s| s.to_string()));
        argv
    }

    /// A command that changes (or downloads) packages: `packages.exclude` applies, so no
    /// dependency can pull an excluded package in, and each package is named at its planned
    /// version (`name-[epoch:]version-release`), so what is installed is what was planned
    /// and checked against the filters, even hours later. Amazon Linux 2023's repositories
    /// are immutable per release, so the planned version stays available.
    fn change_argv(&self, target: &Target, extra: &[&str]) -> Vec<String> {
        let upgrade = match self.tool {
            RpmTool::Dnf => "upgrade",
            RpmTool::Yum => "update",
        };
        let mut verb = vec!["-y"];
        let excludes: Vec<String> = self.exclude.iter().map(|p| format!("--exclude={p}")).collect();
        verb.extend(excludes.iter().map(String::as_str));
        verb.push(upgrade);
        verb.extend_from_slice(extra);
        let specs: Vec<String> = target.updates.iter().map(|u| format!("{}-{}", u.name, u.available)).collect();
        self.argv(target.release.as_deref(), &verb, &specs)
    }

    /// A read-only query; its output on success.
    async fn query(&self, argv: Vec<String>) -> Result<String> {
        let output = run(&argv, &[], self.timeout).await?;
        expect_success(&argv, output).map(|o| o.stdout)
    }

    /// Runs a command that changes or downloads packages. dnf waits for a lock held by a
    /// leftover transaction by itself; with `exit_on_lock` set it exits 200 instead, and
    /// the command is tried again until `packages.command_timeout` has passed.
    async fn run_checked(&self, argv: Vec<String>) -> Result<()> {
        let dnf = self.tool == RpmTool::Dnf;
        let locked = |o: &command::Output| dnf && o.code == Some(DNF_LOCKED);
        let mut output = run_until_unlocked(&argv, &[], self.timeout, locked).await?;
        // dnf resolves the transaction before it waits for the lock: when the holder (a
        // leftover transaction) changed the rpm database meanwhile, the stale transaction
        // fails ("package not installed"). Once, resolve it again.
        let waited = output.stdout.contains(WAITED_FOR_LOCK) || output.stderr.contains(WAITED_FOR_LOCK);
        if output.code != Some(0) && waited {
            info!("the package manager waited for another transaction and then failed; trying again");
            output = run_until_unlocked(&argv, &[], self.timeout, locked).await?;
        }
        expect_success(&argv, output).map(drop)
    }

    /// Installed packages: name and epoch:version-release.
    async fn installed(&self) -> Result<Vec<(String, String)>> {
        let out = self.query(self.unfiltered(&["-q", "repoquery", "--installed", "--qf", "%{name}|%{evr}"])).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('|'))
            .map(|(name, evr)| (name.to_string(), evr.to_string()))
            .collect())
    }

    /// dnf: upgrades (install-only kernels included: a newer kernel is an upgrade of the
    /// installed one) and packages that obsolete an installed one, as `dnf upgrade` would
    /// take them. An obsoleter is matched against the installed packages' exact versions
    /// (`name = evr`), as dnf itself does, so a stale `Obsoletes: foo < 2` is not planned.
    async fn dnf_pending(&self, release: Option<&str>, installed: &[(String, String)]) -> Result<Vec<PackageUpdate>> {
        let upgrades = self
            .query(self.argv(
                release,
                &["-q", "repoquery", "--upgrades", "--latest-limit=1", "--qf", QUERY_FORMAT],
                &[],
            ))
            .await?;
        let mut updates = parse_query(&upgrades, self.security_only);
        let provided: Vec<String> = installed.iter().map(|(n, evr)| format!("{n} = {evr}")).collect();
        if !provided.is_empty() {
            let obsoleting = self
                .query(self.argv(
                    release,
                    &[
                        "-q",
                        "repoquery",
                        "--available",
                        "--latest-limit=1",
                        "--qf",
                        QUERY_FORMAT,
                        "--whatobsoletes",
                        &provided.join(","),
                    ],
                    &[],
                ))
                .await?;
            for update in parse_query(&obsoleting, self.security_only) {
                let already = installed.iter().any(|(n, _)| *n == update.name);
                if !already && !updates.iter().any(|u| u.name == update.name) {
                    updates.push(update);
                }
            }
        }
        for update in &mut updates {
            update.current = installed.iter().find(|(n, _)| *n == update.name).map(|(_, evr)| evr.clone());
        }
        Ok(updates)
    }

    /// Marks each update with what its advisories (`updateinfo list`) say: a security fix,
    /// and the highest severity. Best effort: a repository without update metadata (or a
    /// failed query) marks nothing, which only costs the report its severities.
    async fn advise(&self, release: Option<&str>, updates: &mut [PackageUpdate]) {
        if updates.is_empty() {
            return;
        }
        match self.query(self.argv(release, &["-q", "updateinfo", "list"], &[])).await {
            Ok(listing) => apply_advisories(&listing, updates),
            Err(e) => info!("no advisory information for the updates: {e}"),
        }
    }

    /// yum: `check-update` (exit 100 when updates are available).
    async fn yum_pending(&self) -> Result<Vec<PackageUpdate>> {
        let argv = self.argv(None, &["-q", "check-update"], &[]);
        let output = run(&argv, &[], self.timeout).await?;
        match output.code {
            Some(0) => Ok(Vec::new()),
            Some(UPDATES_AVAILABLE) => Ok(parse_check_update(&output.stdout, self.security_only)),
            _ => Err(Error::Packages(command::failure(&argv, &output))),
        }
    }

    /// The release the host runs (its installed `system-release`, among `installed`) and
    /// the newest one published (dnf only). Which release plain commands use (the lock) is
    /// dnf's business; the plan only says when it overrides it.
    async fn releases(&self, installed: &[(String, String)]) -> Result<Option<Releases>> {
        let Some((_, evr)) = installed.iter().find(|(n, _)| n == RELEASE_PACKAGE) else {
            // Not a system with versioned repositories: `locked` and `latest` (the default)
            // mean the same there; a pinned release cannot be had.
            if let ReleasePolicy::Pinned(version) = &self.release {
                return Err(Error::Config(format!(
                    "packages.release is \"{version}\", but no {RELEASE_PACKAGE} package is installed: only \
                     Amazon Linux 2023 has versioned repositories; write \"latest\" or \"locked\""
                )));
            }
            return Ok(None);
        };
        let running = version_of(evr);
        let newest = self
            .query(self.unfiltered(&[
                "--releasever=latest",
                "-q",
                "repoquery",
                "--available",
                "--latest-limit=1",
                "--qf",
                "%{evr}",
                RELEASE_PACKAGE,
            ]))
            .await;
        let newest = match newest {
            Ok(out) => out.lines().next().map(version_of),
            Err(e) => {
                warn!("cannot find the newest release: {e}");
                None
            }
        };
        let target = match &self.release {
            ReleasePolicy::Locked => None,
            ReleasePolicy::Pinned(version) => Some(version.clone()),
            ReleasePolicy::Latest => match &newest {
                Some(v) if *v != running => Some(v.clone()),
                Some(_) => None,
                None => {
                    return Err(Error::Packages(
                        "packages.release is \"latest\" but the newest release cannot be found".into(),
                    ));
                }
            },
        };
        Ok(Some(Releases { running, newest, target }))
    }
}

#[async_trait::async_trait]
impl PackageManager for Rpm {
    fn name(&self) -> &'static str {
        self.program()
    }

    async fn survey(&self) -> Result<Survey> {
        if self.tool == RpmTool::Yum {
            let mut updates = self.yum_pending().await?;
            self.advise(None, &mut updates).await;
            return Ok(Survey { releases: None, updates });
        }
        let installed = self.installed().await?;
        let releases = self.releases(&installed).await?;
        let target = releases.as_ref().and_then(|r| r.target.as_deref());
        let mut updates = self.dnf_pending(target, &installed).await?;
        self.advise(target, &mut updates).await;
        Ok(Survey { releases, updates })
    }

    async fn pending(&self, release: Option<&str>) -> Result<Vec<PackageUpdate>> {
        match self.tool {
            RpmTool::Dnf => self.dnf_pending(release, &self.installed().await?).await,
            RpmTool::Yum => self.yum_pending().await,
        }
    }

    async fn download(&self, target: &Target) -> Result<()> {
        self.run_checked(self.change_argv(target, &["--downloadonly"])).await
    }

    async fn install(&self, target: &Target) -> Result<()> {
        self.run_checked(self.change_argv(target, &[])).await
    }

    async fn reboot_probe(&self) -> Result<RebootProbe> {
        match self.reboot_required().await {
            Ok(_) => Ok(RebootProbe::NeedsRestarting),
            Err(e) => {
                info!("needs-restarting cannot answer ({e}); the reboot rule decides");
                Ok(RebootProbe::Rule)
            }
        }
    }

    async fn reboot_required(&self) -> Result<RebootNeed> {
        let argv = match self.tool {
            RpmTool::Dnf => self.unfiltered(&["needs-restarting", "-r"]),
            RpmTool::Yum => vec!["needs-restarting".into(), "-r".into()],
        };
        let output = run(&argv, &[], self.timeout).await?;
        read_needs_restarting(&argv, &output)
    }

    async fn services_to_restart(&self) -> Vec<String> {
        let argv = match self.tool {
            RpmTool::Dnf => self.unfiltered(&["-q", "needs-restarting", "-s"]),
            RpmTool::Yum => vec!["needs-restarting".into(), "-s".into()],
        };
        let listed = optional(&argv, self.timeout).await.unwrap_or_default();
        listed.lines().map(str::trim).filter(|l| l.ends_with(".service")).map(str::to_string).collect()
    }

    async fn advisory_cves(&self, release: Option<&str>, applied: bool) -> Result<Cves> {
        // dnf(8): with `--with-cve`, "the ID of the CVE or the bugzilla is printed instead of
        // the one of the advisory", one line per CVE and package; `--installed` lists the
        // advisories of what is installed (applied), the default those of newer versions.
        let verb: &[&str] = match (self.tool, applied) {
            (RpmTool::Dnf, false) => &["-q", "updateinfo", "list", "--with-cve"],
            (RpmTool::Dnf, true) => &["-q", "updateinfo", "list", "--with-cve", "--installed"],
            (RpmTool::Yum, false) => &["-q", "updateinfo", "list", "cves"],
            (RpmTool::Yum, true) => &["-q", "updateinfo", "list", "installed", "cves"],
        };
        Ok(read_cve_listing(&self.query(self.argv(release, verb, &[])).await?))
    }

    async fn kernel_built(&self, kernel: &str) -> Option<SystemTime> {
        if !super::package_name(kernel) {
            return None;
        }
        let image = format!("/boot/vmlinuz-{kernel}");
        match self.tool {
            RpmTool::Dnf => {
                let argv =
                    self.unfiltered(&["-q", "repoquery", "--installed", "--qf", "%{buildtime}", "--file", &image]);
                optional(&argv, self.timeout).await?.lines().find_map(parse_build_time)
            }
            // yum has no repoquery without yum-utils: rpm answers, in seconds since the epoch.
            RpmTool::Yum => {
                let argv = ["rpm", "-qf", "--qf", "%{BUILDTIME}\\n", &image].map(String::from);
                let text = optional(&argv, self.timeout).await?;
                let seconds = text.lines().find_map(|l| l.trim().parse::<u64>().ok())?;
                SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds))
            }
        }
    }

    async fn rebooting_updaters(&self) -> Result<Vec<RebootingUpdater>> {
        let Some(config) = self.automatic_config.as_ref().filter(|c| c.exists()) else {
            return Ok(Vec::new());
        };
        let mut ini = configparser::ini::Ini::new();
        ini.load(config)
            .map_err(|e| Error::Packages(format!("cannot read dnf-automatic's {}: {e}", config.display())))?;
        // dnf-automatic(8): "reboot: either one of never, when-changed, when-needed"
        // (default never), and it reboots only after installing: "apply_updates: Whether
        // packages comprising the available updates should be applied by
        // dnf-automatic.timer", while dnf-automatic-install.timer installs "regardless of
        // the configuration file settings".
        let reboot = ini.get("commands", "reboot").unwrap_or_else(|| "never".into());
        let applies = ini.getboolcoerce("commands", "apply_updates").ok().flatten().unwrap_or(false);
        let install_timer = config
            .ancestors()
            .nth(3)
            .map(|root| root.join("etc/systemd/system/timers.target.wants/dnf-automatic-install.timer"))
            .is_some_and(|link| link.exists());
        Ok(if reboot.trim() == "never" || !(applies || install_timer) {
            Vec::new()
        } else {
            let how = if applies { "apply_updates = yes" } else { "dnf-automatic-install.timer enabled" };
            vec![RebootingUpdater {
                name: "dnf-automatic".into(),
                because: format!("reboot = {}, {how} in {}", reboot.trim(), config.display()),
            }]
        })
    }
}

/// The version part of `[epoch:]version-release` (`2023.6.20241010` of `2023.6.20241010-0.amzn2023`).
fn version_of(evr: &str) -> String {
    let without_epoch = evr.split_once(':').map_or(evr, |(_, rest)| rest);
    without_epoch.rsplit_once('-').map_or(without_epoch, |(version, _)| version).to_string()
}

/// Severities of Amazon Linux (and RHEL) advisories, least first.
const SEVERITIES: [&str; 4] = ["low", "moderate", "important", "critical"];

/// Applies `updateinfo list` lines (`ALAS2023-2024-123 Important/Sec. curl-8.5.0-1.amzn2023.x86_64`,
/// `ALAS2-2024-7 bugfix foo-1-2.noarch`) to the updates of the same package name: an
/// advisory for any newer version is fixed by the newest.
fn apply_advisories(listing: &str, updates: &mut [PackageUpdate]) {
    let rank = |s: &str| SEVERITIES.iter().position(|k| k.eq_ignore_ascii_case(s)).map_or(0, |i| i + 1);
    for line in listing.lines() {
        let [_, kind, nevra] = line.split_whitespace().collect::<Vec<_>>()[..] else { continue };
        let (severity, kind) = kind.rsplit_once('/').map_or((None, kind), |(s, k)| (Some(s), k));
        let Some(name) = package_name(nevra) else { continue };
        for update in updates.iter_mut().filter(|u| u.name == name) {
            update.security |= kind.starts_with("Sec") || kind.eq_ignore_ascii_case("security");
            if let Some(severity) = severity
                && rank(severity) > update.severity.as_deref().map_or(0, rank)
            {
                let mut word = severity.to_ascii_lowercase();
                word[..1].make_ascii_uppercase();
                update.severity = Some(word);
            }
        }
    }
}

/// The most CVE lines read from one listing.
const MOST_CVE_LINES: usize = 100_000;

/// Reads `updateinfo list --with-cve` (`CVE-2024-1086 Important/Sec. kernel-6.1.1-1.amzn2023.x86_64`).
fn read_cve_listing(listing: &str) -> Cves {
    let mut cves = Cves::new();
    for line in listing.lines().take(MOST_CVE_LINES) {
        let [cve, _, nevra] = line.split_whitespace().collect::<Vec<_>>()[..] else { continue };
        let Some(name) = package_name(nevra).filter(|n| super::package_name(n)) else { continue };
        if super::is_cve(cve) {
            cves.entry(name.to_string()).or_default().insert(cve.to_string());
        }
    }
    cves
}

/// The name of `name-version-release.arch`.
fn package_name(nevra: &str) -> Option<&str> {
    let (without_arch, _) = nevra.rsplit_once('.')?;
    let (rest, _release) = without_arch.rsplit_once('-')?;
    Some(rest.rsplit_once('-')?.0)
}

/// Reads `repoquery --qf QUERY_FORMAT` output; `security` marks every update as a
/// security fix (the query ran with `--security`).
fn parse_query(stdout: &str, security: bool) -> Vec<PackageUpdate> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('|');
            let (name, evr, built) = (fields.next()?, fields.next()?, fields.next()?);
            let available = evr.trim_start_matches("0:");
            // A line without a name or a version is no package's (noise, not a plan).
            if name.is_empty() || available.is_empty() {
                return None;
            }
            Some(PackageUpdate {
                name: name.to_string(),
                current: None,
                available: available.to_string(),
                built: parse_build_time(built),
                security,
                severity: None,
            })
        })
        .collect()
}

/// dnf prints a build time as `YYYY-MM-DD HH:MM` in the local zone (UTC here: `run` sets TZ).
fn parse_build_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(&format!("{}:00", text.trim())).ok()
}

/// Reads `needs-restarting -r`: exit 1 alone is not enough (any error exits 1 too), so the
/// output must say which case it is; anything else is an error, never "reboot needed".
fn read_needs_restarting(argv: &[String], output: &command::Output) -> Result<RebootNeed> {
    let text = format!("{}{}", output.stdout, output.stderr);
    let said = |phrase: &str| text.contains(phrase);
    match output.code {
        Some(1) if said("Reboot is required") => Ok(RebootNeed { needed: true, reason: summary(&text) }),
        Some(0)
            if said("No core libraries or services have been updated") || said("Reboot is probably not necessary") =>
        {
            Ok(RebootNeed { needed: false, reason: summary(&text) })
        }
        _ => {
            Err(Error::Packages(format!("cannot tell whether a reboot is needed: {}", command::failure(argv, output))))
        }
    }
}

fn summary(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Reads yum's `check-update` as a stream of `name.arch version repo` triples: a long name
/// wraps the line after it, which a line-by-line reading would lose. Stops at "Obsoleting
/// Packages" (yum installs those through the packages they obsolete).
fn parse_check_update(stdout: &str, security: bool) -> Vec<PackageUpdate> {
    let body = stdout.split("Obsoleting Packages").next().unwrap_or_default();
    let tokens: Vec<&str> = body.split_whitespace().collect();
    let mut updates: Vec<PackageUpdate> = Vec::new();
    let mut i = 0;
    while i + 2 < tokens.len() {
        let (name_arch, version) = (tokens[i], tokens[i + 1]);
        let looks_like_package = name_arch.rsplit_once('.').is_some_and(|(n, arch)| !n.is_empty() && !arch.is_empty());
        if !(looks_like_package && version.starts_with(|c: char| c.is_ascii_digit())) {
            i += 1;
            continue;
        }
        let name = name_arch.rsplit_once('.').map_or(name_arch, |(n, _)| n);
        if !updates.iter().any(|u| u.name == name) {
            updates.push(PackageUpdate {
                name: name.to_string(),
                current: None,
                available: version.to_string(),
                built: None,
                security,
                severity: None,
            });
        }
        i += 3;
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// dnf's and yum's output is a repository's word: any lines are read without a
        /// panic, and what is read names a package.
        #[test]
        fn any_package_manager_output_is_read_without_a_panic(lines in proptest::collection::vec("[^\n]{0,80}", 0..20)) {
            let text = lines.join("\n");
            for update in parse_query(&text, false).into_iter().chain(parse_check_update(&text, true)) {
                prop_assert!(!update.name.is_empty() && !update.available.is_empty());
            }
        }
    }

    #[test]
    fn cve_listings_give_each_package_its_cves() {
        let cves = read_cve_listing(
            "CVE-2019-15918 important/Sec. kernel-livepatch-5.10.102-99.473-1.0-3.amzn2.x86_64\n\
             CVE-2020-8648 Important/Sec. kernel-livepatch-5.10.102-99.473-1.0-4.amzn2.x86_64\n\
             CVE-2024-1086 Critical/Sec. kernel-5.10.110-1.amzn2.x86_64\n\
             ALAS2-2024-1 bugfix vim-9.0-2.amzn2.x86_64\nupdateinfo list done\n",
        );
        let of = |name: &str| cves[name].iter().map(String::as_str).collect::<Vec<_>>();
        assert_eq!(of("kernel-livepatch-5.10.102-99.473"), ["CVE-2019-15918", "CVE-2020-8648"]);
        assert_eq!(of("kernel"), ["CVE-2024-1086"]);
        assert_eq!(cves.len(), 2);
    }

    #[test]
    fn a_line_without_a_name_or_a_version_is_no_update() {
        // Found by the property test above: "||" was read as an update named "".
        assert!(parse_query("||\n|1.0|\nname||\n", false).is_empty());
        assert_eq!(parse_query("demo-app|0:2.0-1|2026-01-01 10:00\n", false)[0].available, "2.0-1");
    }

    #[test]
    fn advisories_mark_security_fixes_with_their_highest_severity() {
        let update = |name: &str| PackageUpdate::of(name, "2-1");
        let mut updates = vec![update("curl"), update("glibc-common"), update("vim")];
        apply_advisories(
            "ALAS2023-2024-1 Moderate/Sec. curl-8.5.0-1.amzn2023.x86_64\n\
             ALAS2023-2024-2 Critical/Sec. curl-8.6.0-1.amzn2023.x86_64\n\
             ALAS2023-2024-3 Low/Sec. glibc-common-2.34-5.amzn2023.x86_64\n\
             ALAS2023-2024-4 bugfix vim-9.0-2.amzn2023.x86_64\n\
             not an advisory line\n",
            &mut updates,
        );
        assert_eq!((updates[0].security, updates[0].severity.as_deref()), (true, Some("Critical")));
        assert_eq!((updates[1].security, updates[1].severity.as_deref()), (true, Some("Low")), "a name with dashes");
        assert_eq!((updates[2].security, updates[2].severity.as_deref()), (false, None));
    }

    #[test]
    fn reads_wrapped_check_update_and_skips_noise_and_obsoletes() {
        let out = "\n\
kernel.x86_64                 4.14.355-275.570.amzn2   amzn2-core\n\
a-very-long-package-name-that-wraps.x86_64\n\
                              1.2.3-4.amzn2            amzn2-core\n\
ecs-init.x86_64               1.89.2-1.amzn2           amzn2extra-ecs\n\
Obsoleting Packages\n\
grub2-tools.x86_64            1:2.06-61.amzn2          amzn2-core\n";
        let updates = parse_check_update(out, false);
        let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["kernel", "a-very-long-package-name-that-wraps", "ecs-init"]);
        assert_eq!(updates[1].available, "1.2.3-4.amzn2");
    }

    #[test]
    fn reads_repoquery_records() {
        let updates = parse_query("kernel|0:6.1.112-122.amzn2023|2024-10-01 12:30\nbroken line\n", true);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].available, "6.1.112-122.amzn2023");
        assert!(updates[0].security);
        let built = updates[0].built.expect("a build time");
        assert_eq!(humantime::format_rfc3339_seconds(built).to_string(), "2024-10-01T12:30:00Z");
        assert_eq!(version_of("2023.6.20241010-0.amzn2023"), "2023.6.20241010");
        assert_eq!(version_of("1:2.0-1"), "2.0");
    }

    #[tokio::test]
    async fn dnf_automatic_reboots_only_when_it_installs() {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("etc/dnf/automatic.conf");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let dnf = Rpm::new(RpmTool::Dnf, &[], Some(config.clone()), &PackageSettings::default());
        assert!(dnf.rebooting_updaters().await.unwrap().is_empty(), "not installed");
        std::fs::write(&config, "[commands]\napply_updates = no\nreboot = when-needed\n").unwrap();
        assert!(dnf.rebooting_updaters().await.unwrap().is_empty(), "downloads only: never reboots");
        let wants = root.path().join("etc/systemd/system/timers.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink("/dev/null", wants.join("dnf-automatic-install.timer")).unwrap();
        let found = dnf.rebooting_updaters().await.unwrap();
        assert!(found[0].because.contains("dnf-automatic-install.timer"), "{found:?}");
        std::fs::write(&config, "[commands]\napply_updates = yes\nreboot = never\n").unwrap();
        assert!(dnf.rebooting_updaters().await.unwrap().is_empty(), "installs, never reboots");
    }

    fn output(code: i32, stdout: &str) -> command::Output {
        command::Output { code: Some(code), stdout: stdout.into(), stderr: String::new() }
    }

    #[test]
    fn needs_restarting_reads_output_as_well_as_exit_code() {
        let argv = vec!["dnf".to_string(), "needs-restarting".into(), "-r".into()];
        let yes = output(
            1,
            "Core libraries or services have been updated since boot-up:\n  * kernel\n\nReboot is required to fully utilize these updates.\n",
        );
        assert!(read_needs_restarting(&argv, &yes).unwrap().needed);
        let no = output(
            0,
            "No core libraries or services have been updated since boot-up.\nReboot should not be necessary.\n",
        );
        assert!(!read_needs_restarting(&argv, &no).unwrap().needed);
        let broken = output(1, "No such command: needs-restarting.\n");
        assert!(read_needs_restarting(&argv, &broken).is_err());
    }
}
