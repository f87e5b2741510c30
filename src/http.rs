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

/// The body of `response`, read up to `limit` bytes; an error, not an allocation, past it
/// (a body's size is the sender's to choose, and `Content-Length` may lie).
pub async fn body_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(format!("sent an answer larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("sent an answer cut short ({e})"))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("sent an answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
