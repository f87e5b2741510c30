//! HTTP clients for what the AWS SDK does not cover (the ECS agent's API, FleetLock, the
//! webhook): reqwest over rustls, with the crypto provider the AWS SDK's client uses too
//! (ring, so the binary holds one crypto library) and the system's trusted roots.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// A client builder whose https uses ring and the system's root certificates.
pub fn client_builder() -> reqwest::ClientBuilder {
    PROVIDER.call_once(|| {
        // Err: the process already has a default provider, which then serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_is_spoken() {
        // Nothing listens on port 9: an https client fails to connect, where one without
        // TLS would refuse the scheme before trying.
        let client = client_builder().build().unwrap();
        let err = client.get("https://127.0.0.1:9/").send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
}
