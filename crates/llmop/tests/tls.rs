//! Upstreams over TLS: a provider behind a private CA is trusted through `ca_file`, and
//! the connection uses HTTP/2 when the upstream offers it (ALPN).

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use support::{fixture, post_json, Gateway};

/// An HTTPS upstream offering h2 and http/1.1; records the HTTP version of each request.
async fn https_upstream() -> (String, String, Arc<Mutex<Vec<hyper::Version>>>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(req.version());
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(fixture(
                                    "openai/chat_completion.json",
                                ))))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (url, ca_pem, versions)
}

#[tokio::test]
async fn private_ca_is_trusted_and_http2_is_used() {
    let (url, ca_pem, versions) = https_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let gw = Gateway::start(&format!(
        "[providers.internal]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\nca_file = \"{}\"\n\
         [providers.untrusting]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\n",
        ca.display()
    ));
    let body = json!({"model": "internal/m", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let r = post_json(&gw, "/v1/chat/completions", &body).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Hello! How can I assist you today?"
        );
    }
    assert_eq!(*versions.lock().unwrap(), vec![hyper::Version::HTTP_2; 3]);

    // Without the CA, the certificate is refused: verification is on.
    let r = post_json(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "untrusting/m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert_eq!(
        versions.lock().unwrap().len(),
        3,
        "the refused call never reached the upstream"
    );
}

#[test]
fn a_bad_ca_file_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let cfg = dir.path().join("llmop.toml");
    std::fs::write(
        &cfg,
        format!(
            "[providers.p]\nkind = \"openai\"\nca_file = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP `CONNECT` proxy on loopback: records each tunnel's target (and whether it was
/// asked with credentials), then relays bytes both ways.
async fn connect_proxy() -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let authed = head.contains("proxy-authorization: basic ");
                log.lock().unwrap().push((target.clone(), authed));
                let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (format!("http://user:pw@{addr}"), seen)
}

/// `HTTPS_PROXY` in the gateway's environment: upstream connections go through the
/// proxy's tunnel (TLS to the upstream inside it, the proxy's credentials sent); a host
/// in `NO_PROXY` is reached directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_are_reached_through_the_environments_proxy() {
    let (url, ca_pem, versions) = https_upstream().await;
    let (proxy, tunnels) = connect_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let config = format!(
        "[providers.internal]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let body = json!({"model": "internal/m", "messages": [{"role": "user", "content": "hi"}]});
    let port = url.rsplit(':').next().unwrap().to_string();

    let gw = Gateway::start_with_env(&config, &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "")]);
    let r = post_json(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        *tunnels.lock().unwrap(),
        vec![(format!("127.0.0.1:{port}"), true)]
    );
    drop(gw);

    let gw = Gateway::start_with_env(
        &config,
        &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "127.0.0.1")],
    );
    let r = post_json(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(tunnels.lock().unwrap().len(), 1, "NO_PROXY was not honored");
    assert_eq!(versions.lock().unwrap().len(), 2);
}

/// A proxy that refuses the tunnel (`407`, as one that wants other credentials does):
/// the call fails at once as `upstream_unreachable` (502), and neither the answer nor the
/// gateway's log shows the proxy's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_the_tunnel_is_an_unreachable_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf).await;
                let _ = client
                    .write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    let proxy = format!("http://proxyuser:s3cret-proxy-pw@{addr}");
    let gw = Gateway::start_with_env(
        "[providers.far]\nkind = \"openai\"\nbase_url = \"https://api.example.test/v1\"\n",
        &[("HTTPS_PROXY", &proxy), ("NO_PROXY", "")],
    );
    let body = json!({"model": "far/m", "messages": [{"role": "user", "content": "hi"}]});
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        post_json(&gw, "/v1/chat/completions", &body),
    )
    .await
    .expect("the refused tunnel ends the call");
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable", "{text}");
    assert!(!text.contains("s3cret-proxy-pw"), "{text}");
    let logs = gw.logs();
    assert!(
        !logs.contains("s3cret-proxy-pw"),
        "the proxy's password was logged"
    );
    assert!(logs.contains("through a proxy"), "{logs}");
}
