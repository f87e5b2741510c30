//! What the packages ship beside the binary, checked against the code and each other.
//!
//! The IAM policy grants exactly the AWS operations the code calls: every operation called
//! from `src/` through an AWS SDK client must be allowed by
//! `packaging/iam/ecs-patchd-policy.json` (and by the CloudFormation template's managed
//! policy), and neither may allow an action the code never calls. The operations come from
//! the source itself: an SDK fluent call `.describe_tasks()` in a file that uses
//! `aws_sdk_ecs` is `ecs:DescribeTasks`, the operation's name read from the SDK crate's own
//! `src/operation/describe_tasks.rs` (found with `cargo metadata`).
//!
//! The template carries the SSM document verbatim. The packages themselves are built and
//! installed by `scripts/package` and `scripts/check-packages`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;

/// An SDK crate's operations: the fluent method's name to the API operation's name.
fn operations(sdk_dir: &Path) -> BTreeMap<String, String> {
    let dir = sdk_dir.join("src/operation");
    let mut ops = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let (Some(stem), Some("rs")) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some(name) =
            text.lines().find_map(|l| l.strip_prefix("pub struct").and_then(|r| r.trim().strip_suffix(';')))
        {
            ops.insert(stem.to_string(), name.trim().to_string());
        }
    }
    assert!(!ops.is_empty(), "no operations under {}", dir.display());
    ops
}

/// Each `aws-sdk-*` crate in the dependency graph, by its Rust name (`aws_sdk_ecs`), with its
/// source directory.
/// Filtered to this host's platform: the whole graph names Windows-only crates that a Linux
/// build never downloads, and `--offline` must find every crate it resolves in the registry.
fn sdk_crates() -> BTreeMap<String, PathBuf> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--filter-platform", &host_triple()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?.strip_prefix("aws-sdk-")?;
            let manifest = PathBuf::from(p["manifest_path"].as_str()?);
            Some((format!("aws_sdk_{name}"), manifest.parent()?.to_path_buf()))
        })
        .collect()
}

/// The triple rustc builds for on this machine (`host:` in `rustc -vV`).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-vV").output().unwrap();
    assert!(out.status.success(), "rustc -vV: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let host = text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names the host");
    host.trim().to_string()
}

/// DynamoDB authorizes a transaction by the actions of its items, not by an action of its
/// own. AWS: "Permissions for Put, Update, Delete, and Get actions are governed by the
/// permissions used for the underlying PutItem, UpdateItem, DeleteItem, and GetItem
/// operations. For the ConditionCheck action, you can use the dynamodb:ConditionCheck
/// permission." (Using IAM with DynamoDB transactions.)
const TRANSACTION_ITEMS: [(&str, &str); 4] = [
    ("TransactWriteItem::builder().put(", "dynamodb:PutItem"),
    ("TransactWriteItem::builder().update(", "dynamodb:UpdateItem"),
    ("TransactWriteItem::builder().delete(", "dynamodb:DeleteItem"),
    ("TransactWriteItem::builder().condition_check(", "dynamodb:ConditionCheckItem"),
];

/// The IAM actions the code calls, each with the file that calls it.
fn called_actions() -> BTreeMap<String, String> {
    let sdks = sdk_crates();
    let mut files = Vec::new();
    common::rust_files(&common::repo_path("src"), &mut files);
    let mut actions = BTreeMap::new();
    for file in files {
        let text: String = std::fs::read_to_string(&file).unwrap().split_whitespace().collect();
        let shown = file.strip_prefix(common::repo_path("")).unwrap_or(&file).display().to_string();
        for (krate, dir) in &sdks {
            if !text.contains(&format!("{krate}::")) {
                continue;
            }
            let prefix = krate.trim_start_matches("aws_sdk_");
            for (method, operation) in operations(dir) {
                if !text.contains(&format!(".{method}()")) {
                    continue;
                }
                if prefix == "dynamodb" && operation == "TransactWriteItems" {
                    let items: Vec<_> = TRANSACTION_ITEMS.iter().filter(|(call, _)| text.contains(call)).collect();
                    assert!(!items.is_empty(), "{shown}: a transaction whose items this test cannot see");
                    for (_, action) in items {
                        actions.insert(action.to_string(), shown.clone());
                    }
                } else {
                    actions.insert(format!("{prefix}:{operation}"), shown.clone());
                }
            }
        }
    }
    actions
}

/// Every action an Allow statement of the policy names (a Deny statement narrows them).
fn policy_actions(policy: &serde_json::Value) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        if statement["Effect"] == "Deny" {
            continue;
        }
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let listed = match &statement["Action"] {
            serde_json::Value::String(one) => vec![one.clone()],
            many => many.as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
        };
        for action in listed {
            assert!(!action.contains('*'), "{action}: name each action, no wildcards");
            assert!(actions.insert(action.clone()), "{action} is granted twice");
        }
    }
    actions
}

#[test]
fn the_iam_policy_allows_every_operation_the_code_calls_and_nothing_else() {
    let called = called_actions();
    // The scan must see the calls it is meant to see, or the comparison proves nothing.
    for known in ["ecs:UpdateContainerInstancesState", "dynamodb:GetItem", "autoscaling:SetInstanceProtection"] {
        assert!(called.contains_key(known), "the source scan missed {known}: {called:?}");
    }
    let path = common::repo_path("packaging/iam/ecs-patchd-policy.json");
    let granted = policy_actions(&policy_file("ecs-patchd-policy.json"));
    let missing: Vec<_> =
        called.iter().filter(|(a, _)| !granted.contains(*a)).map(|(a, f)| format!("{a} (called in {f})")).collect();
    let unused: Vec<_> = granted.iter().filter(|a| !called.contains_key(*a)).collect();
    assert!(missing.is_empty(), "{} lacks {missing:?}", path.display());
    assert!(unused.is_empty(), "{} grants {unused:?}, which the code never calls", path.display());
}

#[test]
fn the_readme_names_every_action_of_the_hosts_policy_and_no_other() {
    let readme = std::fs::read_to_string(common::repo_path("README.md")).unwrap();
    let start = readme.find("is the policy, scoped to one cluster").expect("the README's IAM paragraph");
    let paragraph = &readme[start..start + readme[start..].find("\n\n").unwrap()];
    let services = ["ecs", "ec2", "autoscaling", "dynamodb", "cloudwatch", "ssm"];
    let named: BTreeSet<String> = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            quoted.split_once(':').is_some_and(|(service, action)| {
                services.contains(&service) && action.chars().all(|c| c.is_ascii_alphabetic())
            })
        })
        .map(str::to_string)
        .collect();
    assert_eq!(named, policy_actions(&policy_file("ecs-patchd-policy.json")), "README.md's IAM paragraph");
}

/// The policy file `name` under `packaging/iam/`.
fn policy_file(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::repo_path(&format!("packaging/iam/{name}"))).unwrap())
        .unwrap()
}

#[test]
fn the_operator_policy_allows_the_fleet_commands_and_nothing_the_code_never_calls() {
    let called = called_actions();
    let granted = policy_actions(&policy_file("ecs-patchd-operator-policy.json"));
    // `fleet status`, `pause`, `resume` and `release`: the lease items and the cluster's instances.
    for needed in [
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "ecs:ListContainerInstances",
        "ecs:DescribeContainerInstances",
    ] {
        assert!(granted.contains(needed), "the operator's policy lacks {needed}");
    }
    let unused: Vec<_> = granted.iter().filter(|a| !called.contains_key(*a)).collect();
    assert!(unused.is_empty(), "the operator's policy grants {unused:?}, which the code never calls");
}

#[test]
fn stopping_tasks_and_scale_in_protection_stand_in_their_own_narrow_statements() {
    let policy = policy_file("ecs-patchd-policy.json");
    let statements = policy["Statement"].as_array().unwrap();
    let holding = |action: &str| {
        statements.iter().find(|s| policy_actions(&serde_json::json!({ "Statement": [s] })).contains(action)).unwrap()
    };
    // An operator who keeps drain.standalone_tasks = "wait" deletes this statement whole.
    assert_eq!(policy_actions(&serde_json::json!({ "Statement": [holding("ecs:StopTask")] })).len(), 1);
    let protection = holding("autoscaling:SetInstanceProtection");
    assert_eq!(
        protection["Condition"]["StringEquals"]["autoscaling:ResourceTag/ecs-patchd:cluster"], "${ClusterName}",
        "only the cluster's tagged groups: {protection}"
    );
}

#[test]
fn every_statement_is_scoped_where_the_action_allows_it() {
    for name in ["ecs-patchd-policy.json", "ecs-patchd-operator-policy.json"] {
        statements_are_scoped(&policy_file(name));
    }
}

fn statements_are_scoped(policy: &serde_json::Value) {
    // AWS's Service Authorization Reference lists no resource type for these: "*" is the
    // only resource they take. ListTasks by service names no container instance (the
    // resource type the reference gives it), so its statement is scoped by the cluster
    // condition below instead. Every other action is scoped to a resource ARN.
    let resourceless = [
        "autoscaling:DescribeAutoScalingInstances",
        "ec2:DescribeInstances",
        "ssm:PutInventory",
        "ecs:DescribeTaskDefinition",
        "ecs:ListTasks",
    ];
    for statement in policy["Statement"].as_array().unwrap() {
        let resource = statement["Resource"].as_str().unwrap();
        let actions = policy_actions(&serde_json::json!({ "Statement": [statement] }));
        if resource == "*" {
            assert!(actions.iter().all(|a| resourceless.contains(&a.as_str())), "{statement}");
        } else {
            assert!(resource.starts_with("arn:${AWS::Partition}:"), "{statement}");
        }
        // ECS actions on the cluster's instances, tasks and services carry the cluster
        // condition (task definitions belong to no cluster).
        let clustered = |a: &String| a.starts_with("ecs:") && a.as_str() != "ecs:DescribeTaskDefinition";
        if actions.iter().any(clustered) && !resource.ends_with(":cluster/${ClusterName}") {
            assert!(statement["Condition"]["ArnEquals"]["ecs:cluster"].is_string(), "{statement}");
        }
    }
}

/// A policy value as the template writes it: `!Sub` where it holds a placeholder.
fn template_value(value: &serde_json::Value) -> String {
    let text = value.as_str().unwrap();
    if text.contains("${") { format!("!Sub \"{text}\"") } else { format!("\"{text}\"") }
}

/// The policy's statements as the template's YAML writes them (under `Statement:`).
fn policy_as_template_yaml(policy: &serde_json::Value) -> String {
    let mut yaml = String::new();
    let mut line = |depth: usize, text: String| yaml.push_str(&format!("{}{text}\n", " ".repeat(10 + 2 * depth)));
    for statement in policy["Statement"].as_array().unwrap() {
        line(0, format!("- Sid: {}", statement["Sid"].as_str().unwrap()));
        line(1, format!("Effect: {}", statement["Effect"].as_str().unwrap()));
        line(1, "Action:".into());
        for action in statement["Action"].as_array().unwrap() {
            line(2, format!("- {}", action.as_str().unwrap()));
        }
        line(1, format!("Resource: {}", template_value(&statement["Resource"])));
        let Some(condition) = statement["Condition"].as_object() else { continue };
        line(1, "Condition:".into());
        for (operator, keys) in condition {
            line(2, format!("\"{operator}\":"));
            for (key, value) in keys.as_object().unwrap() {
                match value.as_array() {
                    Some(values) => {
                        line(3, format!("\"{key}\":"));
                        for value in values {
                            line(4, format!("- {}", template_value(value)));
                        }
                    }
                    None => line(3, format!("\"{key}\": {}", template_value(value))),
                }
            }
        }
    }
    yaml
}

#[test]
fn the_cloudformation_template_carries_both_policies_statement_for_statement() {
    let template = std::fs::read_to_string(common::repo_path("packaging/cloudformation/ecs-patchd.yaml")).unwrap();
    for (file, resource, next) in [
        ("ecs-patchd-policy.json", "InstancePolicy", "OperatorPolicy"),
        ("ecs-patchd-operator-policy.json", "OperatorPolicy", "PatchDocument"),
    ] {
        let expected = format!("        Statement:\n{}\n  {next}:", policy_as_template_yaml(&policy_file(file)));
        assert!(
            template.contains(&expected),
            "the template's {resource} differs from {file}; it should read:\n{expected}"
        );
    }
}

#[test]
fn the_cloudformation_template_carries_the_ssm_document_verbatim() {
    let document = std::fs::read_to_string(common::repo_path("packaging/ssm/ecs-patchd-run.json")).unwrap();
    let indented: String =
        document.lines().map(|l| if l.is_empty() { "\n".to_string() } else { format!("        {l}\n") }).collect();
    let template = std::fs::read_to_string(common::repo_path("packaging/cloudformation/ecs-patchd.yaml")).unwrap();
    assert!(
        template.contains(&format!("      Content:\n{indented}")),
        "the template's PatchDocument differs from the SSM document"
    );
}

#[test]
fn assets_writes_a_man_page_per_command_and_completions_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_ecs-patchd")).arg("assets").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut pages: Vec<_> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for page in ["ecs-patchd.8", "ecs-patchd-run.8", "ecs-patchd-daemon.8", "ecs-patchd-fleet-status.8"] {
        assert!(pages.iter().any(|p| p == page), "{page} missing from {pages:?}");
    }
    // The packaging command itself is hidden: no page, no completion.
    assert!(!pages.iter().any(|p| p.contains("assets")), "{pages:?}");
    let run = std::fs::read_to_string(dir.path().join("man/ecs-patchd-run.8")).unwrap();
    assert!(run.contains(".TH ecs-patchd-run 8") && run.contains("resume\\-only"), "{run}");
    for file in ["ecs-patchd.bash", "_ecs-patchd"] {
        let script = std::fs::read_to_string(dir.path().join("completions").join(file)).unwrap();
        assert!(
            script.contains("resume-only") && script.contains("fleet") && !script.contains("assets"),
            "{file}: {script}"
        );
    }
    let bash =
        std::process::Command::new("bash").arg("-n").arg(dir.path().join("completions/ecs-patchd.bash")).status();
    assert!(bash.unwrap().success(), "the bash completion does not parse");
}
