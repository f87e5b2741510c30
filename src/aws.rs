//! What every AWS call shares: the SDK configuration's credential check, and one reading of
//! SDK failures (transient, credentials, or final) for ECS, DynamoDB and Auto Scaling alike.

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// The HTTP client of every AWS call and of IMDS: hyper over rustls with ring, trusting the
/// system's root certificates (the SDK's default client would bring aws-lc-rs, a second
/// crypto library beside the one reqwest uses).
fn http_client() -> aws_sdk_ecs::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// The SDK's configuration loader (credentials chain, region chain, endpoint variables)
/// with ecs-patchd's HTTP client and timeouts.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client()).timeout_config(timeouts())
}

/// An IMDSv2 client (the SDK's: session tokens, retries, AWS_EC2_METADATA_SERVICE_ENDPOINT).
pub fn imds() -> aws_config::imds::Client {
    let provider = aws_config::provider_config::ProviderConfig::default().with_http_client(http_client());
    aws_config::imds::Client::builder().configure(&provider).build()
}

/// No AWS call may hang a step past its own deadline.
fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .operation_attempt_timeout(std::time::Duration::from_secs(20))
        .operation_timeout(std::time::Duration::from_secs(60))
        .build()
}

/// Where the SDK's default chain looks for credentials, in order (aws-config's
/// `DefaultCredentialsChain`), for messages that must say what was tried.
const CREDENTIAL_CHAIN: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), \
    the shared config and credentials files (AWS_PROFILE), a web identity token \
    (AWS_WEB_IDENTITY_TOKEN_FILE), the ECS container credentials endpoint, and the EC2 instance profile \
    through IMDSv2";

/// Error codes that mean the credentials themselves are missing or invalid: retrying cannot
/// help, an operator must fix the instance profile or the environment.
const CREDENTIAL_CODES: [&str; 5] = [
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
];

/// Error codes of credentials that expired (Common Errors: "ExpiredTokenException: The
/// security token included in the request is expired. HTTP Status Code: 403"). Instance
/// profile credentials rotate, and the SDK's identity cache loads new ones a little before
/// the old ones expire (aws-smithy-runtime's lazy cache: "Amount of time before the actual
/// identity expiration time where the identity is considered expired ... Defaults to 10
/// seconds"): an answer that slips through that margin (a call signed just before the
/// refresh, a few seconds of clock skew) is gone at the next try. So the first such answer
/// in a step is taken for a rotation and the step tried again; a second is final
/// ([`Error::Credentials`] with `expired`).
const EXPIRED_CODES: [&str; 2] = ["ExpiredToken", "ExpiredTokenException"];

/// Error codes of throttling and brief service trouble: the same call may succeed later.
/// So may any answer with a 5xx status (Common Errors: "InternalFailure: The request
/// processing has failed because of an unknown error, exception or failure. HTTP Status
/// Code: 500"; "ServiceUnavailable: The request has failed due to a temporary failure of
/// the server. HTTP Status Code: 503"), whatever its code.
const TRANSIENT_CODES: [&str; 8] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Error codes of a mistake in the setup: a resource the configuration names does not
/// exist, or the role lacks a permission. Waiting cannot mend them; an operator must.
/// DynamoDB: "ResourceNotFoundException: The operation tried to access a nonexistent table
/// or index. The resource might not be specified correctly, or its status might not be
/// ACTIVE" (a table still being created counts too: the setup is not finished);
/// "AccessDeniedException: You do not have sufficient access to perform this action"
/// (Error handling with DynamoDB). ECS: "ClusterNotFoundException: The specified
/// cluster wasn't found". EC2: "UnauthorizedOperation: You are not authorized to perform
/// this operation". DynamoDB's throttling and 5xx stay transient ([`TRANSIENT_CODES`]).
const SETUP_CODES: [(&str, &str); 5] = [
    (
        "ResourceNotFoundException",
        "the table (coordination.dynamodb_table) does not exist in this region: create it as the operator \
         guide's \"First install\" says",
    ),
    ("ClusterNotFoundException", "the cluster does not exist in this region: check ECS_CLUSTER or identity.cluster"),
    ("AccessDeniedException", SETUP_PERMISSION),
    ("AccessDenied", SETUP_PERMISSION),
    ("UnauthorizedOperation", SETUP_PERMISSION),
];

/// How to mend a missing permission.
const SETUP_PERMISSION: &str = "the instance role lacks this action: attach the policy shipped in \
    /usr/share/ecs-patchd/iam/ecs-patchd-policy.json (packaging/iam/), which lists every action ecs-patchd uses";

/// How an AWS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One line: the service's code and message, or what went wrong on the way.
    pub reason: String,
    /// The same call may succeed later (throttling, 5xx, no answer).
    pub transient: bool,
    /// The credentials are missing or invalid.
    pub credentials: bool,
    /// The service said the credentials expired ([`EXPIRED_CODES`]).
    pub expired: bool,
    /// How to mend a mistake in the setup ([`SETUP_CODES`]), when it is one.
    pub setup: Option<&'static str>,
}

/// Reads an SDK failure. Never formats the SDK's `Debug` output (it holds whole
/// responses, headers included): only codes, messages and the chain of causes.
fn failure<E>(err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("unknown error");
            let server_failed = service.raw().status().is_server_error();
            Failure {
                reason: format!("{code}: {}", e.message().unwrap_or("no message")),
                transient: TRANSIENT_CODES.contains(&code) || server_failed,
                credentials: CREDENTIAL_CODES.contains(&code),
                expired: EXPIRED_CODES.contains(&code),
                setup: SETUP_CODES.iter().find(|(c, _)| *c == code).map(|(_, fix)| *fix),
            }
        }
        SdkError::TimeoutError(_) => {
            Failure { reason: "timed out".into(), transient: true, credentials: false, expired: false, setup: None }
        }
        SdkError::ResponseError(_) => Failure {
            reason: "unreadable response".into(),
            transient: true,
            credentials: false,
            expired: false,
            setup: None,
        },
        other => {
            let text = causes(other);
            // The SDK fails before sending when no credentials could be resolved.
            let credentials = text.contains("credentials") && !text.contains("dns error");
            let transient = !credentials && matches!(other, SdkError::DispatchFailure(_));
            Failure { reason: text, transient, credentials, expired: false, setup: None }
        }
    }
}

/// An error and its causes, each as it displays itself, joined by ": ".
///
/// Not the SDK's `DisplayErrorContext`: it appends the error's `Debug` form, which for an
/// SDK error holds the whole raw response, headers included.
pub fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// An IMDS failure in one readable line. The client's own text for an error answer carries
/// the whole HTTP response in debug form (headers, body bytes): here it is the status and
/// what IMDS means by it (AWS knowledge center, "troubleshoot instance metadata"):
/// "The 401 - Unauthorized error occurs if the GET request uses a token that's not valid",
/// "The 403 - Forbidden error occurs if the request isn't allowed or IMDS is turned off",
/// "This error [404] occurs when the requested resource isn't available".
pub fn imds_error(err: &aws_config::imds::client::error::ImdsError) -> String {
    use aws_config::imds::client::error::ImdsError;
    match err {
        ImdsError::ErrorResponse(answer) => {
            let status = answer.response().status().as_u16();
            let meaning = match status {
                401 => ": the session token was refused",
                403 => ": the request is not allowed, or the metadata service is turned off for this instance",
                404 => ": not available on this instance",
                500..=599 => ": the metadata service failed",
                _ => "",
            };
            format!("IMDS answered HTTP {status}{meaning}")
        }
        other => causes(other),
    }
}

/// Reads an SDK failure of `call` (e.g. "ECS ListTasks"): a credentials failure becomes
/// the [`Error::Credentials`] every adapter reports alike, a mistake in the setup an
/// [`Error::Config`] saying how to mend it; any other is handed to `otherwise` to become
/// the adapter's own kind.
pub fn error<E>(call: &str, err: &SdkError<E>, otherwise: impl FnOnce(Failure) -> Error) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let read = failure(err);
    match read.setup {
        _ if read.credentials || read.expired => credentials_error(call, &read.reason, read.expired),
        Some(fix) => Error::Config(format!("{call}: {}: {fix}", read.reason)),
        None => otherwise(read),
    }
}

/// The error for a credentials failure of `what`, naming the chain that was tried.
fn credentials_error(what: &str, reason: &str, expired: bool) -> Error {
    let message = if expired {
        // Not a mistake in the setup: they were valid, and their source renews them.
        format!(
            "{what}: the AWS credentials expired ({reason}); if this recurs, the credential source stopped \
             renewing them or the host's clock is wrong"
        )
    } else {
        format!(
            "{what}: no valid AWS credentials ({reason}). Looked in {CREDENTIAL_CHAIN}. Attach an instance \
             profile whose role allows the actions listed in the README, or set the standard AWS variables."
        )
    };
    Error::Credentials { message, expired }
}

/// Resolves credentials once, before any step, so that missing or unusable credentials
/// stop the run at once (exit 1) instead of looking like a passing ECS outage.
pub async fn check_credentials(config: &aws_config::SdkConfig) -> crate::error::Result<()> {
    let Some(provider) = config.credentials_provider() else {
        return Err(credentials_error("AWS", "no credential provider is configured", false));
    };
    let mut attempt = 1;
    loop {
        match provider.provide_credentials().await {
            Ok(_) => return Ok(()),
            // Right after boot IMDS may be slow to hand out the instance role: a time-out or
            // a provider's own failure is tried again before it counts.
            Err(e @ (CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)))
                if attempt < CREDENTIAL_ATTEMPTS =>
            {
                tracing::warn!("cannot resolve AWS credentials yet (will try again): {}", causes(&e));
                tokio::time::sleep(std::time::Duration::from_secs(2 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(credentials_error("cannot resolve AWS credentials", &causes(&e), false)),
        }
    }
}

/// How many times credentials are asked for before a time-out counts as missing credentials.
const CREDENTIAL_ATTEMPTS: u32 = 4;
