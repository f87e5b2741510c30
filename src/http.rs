//! HTTP clients for what the AWS SDK does not cover (the ECS agent's API, FleetLock, the
//! webhook): reqwest over rustls, with the crypto provider the AWS SDK's client uses too
//! (ring, so the binary holds one crypto library) and the system's trusted roots.

use std::sync::Once;

static PROVIDER: Once = Once::new();

/// A client builder whose https uses ring and the system's root certificates, and which
/// follows no redirect: a request goes where the operator said (the agent's port, the
/// FleetLock server, the webhook), never where an answer points (IMDS, say).
pub fn client_builder() -> reqwest::ClientBuilder {
    PROVIDER.call_once(|| {
        // Err: the process already has a default provider, which then serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
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
    async fn a_redirect_is_not_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere = target.local_addr().unwrap();
        let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = redirector.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = redirector.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let answer = format!("HTTP/1.1 302 Found\r\nLocation: http://{elsewhere}/\r\nContent-Length: 0\r\n\r\n");
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        let client = client_builder().build().unwrap();
        let response = client.get(format!("http://{address}/")).send().await.unwrap();
        assert_eq!(response.status(), 302);
        let followed = tokio::time::timeout(std::time::Duration::from_millis(300), target.accept()).await;
        assert!(followed.is_err(), "the redirect's target was called");
    }

    #[tokio::test]
    async fn https_is_spoken() {
        // Nothing listens on port 9: an https client fails to connect, where one without
        // TLS would refuse the scheme before trying.
        let client = client_builder().build().unwrap();
        let err = client.get("https://127.0.0.1:9/").send().await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
}
