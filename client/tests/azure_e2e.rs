//! End to end with the Azure SDK for Rust: our `ManagedIdentityCredential` authenticates
//! azure_storage_blob's clients (over azure_core's reqwest transport) and, alone, azure_core's
//! `BearerTokenAuthorizationPolicy` on hand-made requests, against Azurite (the Azure Storage
//! emulator, over HTTPS, `--oauth basic`: it checks the token's audience, issuer and times).
//! The token comes from the IMDS emulator; Azurite's certificate is made for the run, and both
//! HTTPS clients trust only it.
//!
//! Azurite is found at `$IMDS_AZURITE_BLOB` (the `azurite-blob` script), else at
//! `python/tests/node_modules/.bin/azurite-blob` (`npm install` in python/tests). Without it
//! the test fails and says how to install it: it is never skipped.
#![cfg(feature = "azure_core")]

#[allow(dead_code)] // the fake clock is the other tests'
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::headers::Headers;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    AsyncRawResponse, Body, ClientOptions, Context, Method, Request, RequestContent, RetryOptions,
    StatusCode, Transport, Url,
};
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use common::{client_for, emulator};
use imds_cache_client::{
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use imds_emulator::Mode;

const STORAGE: &str = "https://storage.azure.com";
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// A self-signed certificate for 127.0.0.1, in PEM files for Azurite and DER for our clients.
struct Certificate {
    dir: PathBuf,
    der: Vec<u8>,
}

impl Certificate {
    fn make() -> Self {
        // One directory (and Azurite data) per test, as the tests run at once.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("imds-cache-azurite-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Certificate {
            dir,
            der: cert.der().to_vec(),
        }
    }

    /// A client configuration (rustls, ring) that trusts this certificate and nothing else.
    fn client_tls(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `azurite-blob` script, or a failure that says how to get it.
fn azurite_path() -> PathBuf {
    let path = std::env::var_os("IMDS_AZURITE_BLOB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../python/tests/node_modules/.bin/azurite-blob")
        });
    assert!(
        path.exists(),
        "Azurite not found at {}: set IMDS_AZURITE_BLOB to the azurite-blob script, or run \
         `npm install` in python/tests (make's python/tests/node_modules/.bin/azurite-blob rule)",
        path.display()
    );
    path
}

/// Azurite's blob service on a free loopback port; stopped on drop.
struct Azurite {
    child: Child,
    port: u16,
}

impl Azurite {
    /// Azurite picks the port (`--blobPort 0`) and says it on stdout once it listens: no port
    /// chosen here that another listener could take first (the tests start Azurites at once).
    fn start(cert: &Certificate) -> Self {
        let mut child = Command::new(azurite_path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .arg("--location")
            .arg(cert.dir.join("data"))
            .args(["--oauth", "basic", "--cert"])
            .arg(cert.dir.join("cert.pem"))
            .arg("--key")
            .arg(cert.dir.join("key.pem"))
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs azurite-blob (is Node.js installed?)");
        let stdout = child.stdout.take().unwrap();
        let mut azurite = Azurite { child, port: 0 };
        // The reader sends the address, then drains stdout until Azurite is gone.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some((_, address)) = line.split_once("successfully listens on ") {
                    let _ = tx.send(address.trim().to_string());
                    break;
                }
            }
            lines.for_each(drop);
        });
        // A bound for a hung Azurite only, never reached by one that starts or fails.
        let address = match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(address) => address,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("Azurite exited at start: {}", azurite.child.wait().unwrap())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("Azurite did not say it listens")
            }
        };
        azurite.port = address
            .strip_prefix("https://127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("Azurite listens on {address}, not HTTPS on 127.0.0.1"));
        azurite
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!(
            "https://127.0.0.1:{}/devstoreaccount1{path}",
            self.port
        ))
        .unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last policy of the chain: sends the request over HTTPS/1.1 (rustls, trusting only the
/// test's certificate) and reads the answer to the end (`Connection: close`).
#[derive(Debug)]
struct Https {
    tls: Arc<rustls::ClientConfig>,
}

impl Https {
    fn new(cert: &Certificate) -> Self {
        Https {
            tls: Arc::new(cert.client_tls()),
        }
    }

    fn send_blocking(&self, request: &Request) -> (u16, Headers, Vec<u8>) {
        let url = request.url();
        let port = url.port().unwrap();
        let body: &[u8] = match request.body() {
            Body::Bytes(bytes) => bytes,
            Body::SeekableStream(_) => panic!("the test sends no streams"),
        };
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
            request.method(),
            request.path_and_query(),
            body.len()
        );
        for (name, value) in request.headers().iter() {
            head.push_str(&format!("{}: {}\r\n", name.as_str(), value.as_str()));
        }
        head.push_str("\r\n");
        let server = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(self.tls.clone(), server).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(head.as_bytes()).unwrap();
        tls.write_all(body).unwrap();
        let mut answer = Vec::new();
        match tls.read_to_end(&mut answer) {
            Ok(_) => {}
            // A server that closes without close_notify: what came is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("reading Azurite's answer: {e}"),
        }
        parse_response(&answer)
    }
}

/// Status, headers and body (chunked or not) of a whole HTTP/1.1 answer.
fn parse_response(answer: &[u8]) -> (u16, Headers, Vec<u8>) {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = std::str::from_utf8(&answer[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = Headers::new();
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        chunked |= name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked");
        headers.insert(name, value);
    }
    let mut rest = &answer[split + 4..];
    if !chunked {
        return (status, headers, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&rest[..end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, headers, body);
        }
        body.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 2 + size + 2..];
    }
}

#[async_trait::async_trait]
impl Policy for Https {
    async fn send(
        &self,
        _: &Context,
        request: &mut Request,
        _: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let (status, headers, body) = self.send_blocking(request);
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(status),
            headers,
            body,
        ))
    }
}

/// Sends `method path` with `body` through `policies` (the bearer policy, then HTTPS).
async fn send(
    policies: &[Arc<dyn Policy>],
    azurite: &Azurite,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::new(azurite.url(path), method);
    request.insert_header("x-ms-version", "2025-01-05");
    if !body.is_empty() {
        request.insert_header("x-ms-blob-type", "BlockBlob");
        request.set_body(Body::from(body.to_vec()));
    }
    let response = policies[0]
        .send(&Context::new(), &mut request, &policies[1..])
        .await
        .expect("the pipeline sends the request");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_vec();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_accepts_our_token_through_the_bearer_policy() {
    let e = emulator(Mode::Imds, 3, |_| {});
    let user = e.identities()[2].clone();
    let client = Arc::new(client_for(&e, |_| {}));
    let credential: Arc<dyn TokenCredential> =
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ObjectId(user.object_id.clone())),
            client: Some(client.clone()),
        }))
        .unwrap();
    let cert = Certificate::make();
    let azurite = Azurite::start(&cert);
    let policies: Vec<Arc<dyn Policy>> = vec![
        Arc::new(BearerTokenAuthorizationPolicy::new(
            credential.clone(),
            [STORAGE_SCOPE],
        )),
        Arc::new(Https::new(&cert)),
    ];
    let text: &[u8] = b"a token from a managed identity, checked by Azurite";
    let (status, body) = send(
        &policies,
        &azurite,
        Method::Put,
        "/imds-cache?restype=container",
        b"",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::Created,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = send(
        &policies,
        &azurite,
        Method::Put,
        "/imds-cache/hello.txt",
        text,
    )
    .await;
    assert_eq!(status, StatusCode::Created);
    let (status, body) = send(
        &policies,
        &azurite,
        Method::Get,
        "/imds-cache/hello.txt",
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (StatusCode::Ok, text));
    // The token came from the emulator, for storage, for that identity, fetched once.
    let minted: Vec<_> = e
        .tokens()
        .into_iter()
        .filter(|t| t.resource == STORAGE)
        .collect();
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].client_id, user.client_id);
    assert_eq!(e.stats().requests, 1);

    // The control: Azurite checks the audience, so a vault token through the same credential
    // is refused (and so the acceptance above is the token's doing).
    let wrong: Vec<Arc<dyn Policy>> = vec![
        Arc::new(BearerTokenAuthorizationPolicy::new(
            credential,
            [VAULT_SCOPE],
        )),
        Arc::new(Https::new(&cert)),
    ];
    let (status, _) = send(&wrong, &azurite, Method::Get, "/imds-cache/hello.txt", b"").await;
    assert!(
        status == StatusCode::Unauthorized || status == StatusCode::Forbidden,
        "a token for another audience must be refused: {status}"
    );
    assert_eq!(e.stats().requests, 2);
}

/// A blob service client for Azurite's account, authenticated by `credential` (none:
/// anonymous), over azure_core's reqwest transport: HTTP/1.1, no proxy (loopback only, whatever
/// the environment says), the test's TLS configuration, and no retries (an answer is final).
fn blob_service(
    azurite: &Azurite,
    cert: &Certificate,
    credential: Option<Arc<dyn TokenCredential>>,
) -> BlobServiceClient {
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(cert.client_tls())
        .build()
        .unwrap();
    let options = BlobServiceClientOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            retry: RetryOptions::none(),
            ..ClientOptions::default()
        },
        ..BlobServiceClientOptions::default()
    };
    BlobServiceClient::new(azurite.url(""), credential, Some(options)).unwrap()
}

/// Asks `inner` for `scope`, whatever scopes its caller asks for: a storage client given it
/// sends a token for another audience.
#[derive(Debug)]
struct ForScope {
    inner: Arc<dyn TokenCredential>,
    scope: &'static str,
}

#[async_trait::async_trait]
impl TokenCredential for ForScope {
    async fn get_token(
        &self,
        _: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.inner.get_token(&[self.scope], options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_accepts_our_token_through_the_storage_client() {
    let e = emulator(Mode::Imds, 2, |_| {});
    let user = e.identities()[1].clone();
    let client = Arc::new(client_for(&e, |_| {}));
    let credential: Arc<dyn TokenCredential> =
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: Some(UserAssignedId::ClientId(user.client_id.clone())),
            client: Some(client),
        }))
        .unwrap();
    let cert = Certificate::make();
    let azurite = Azurite::start(&cert);
    let service = blob_service(&azurite, &cert, Some(credential.clone()));
    let container = service.blob_container_client("imds-cache-sdk");
    container.create(None).await.expect("the container is made");
    let blob = container.blob_client("hello.txt");
    let text: &[u8] = b"a token from a managed identity, sent by the storage client";
    blob.upload(RequestContent::from(text.to_vec()), None)
        .await
        .expect("the blob is uploaded");
    let downloaded = blob
        .download(None)
        .await
        .expect("the blob is downloaded")
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), text);
    // One token, from the emulator, for storage, for that identity.
    let minted: Vec<_> = e
        .tokens()
        .into_iter()
        .filter(|t| t.resource == STORAGE)
        .collect();
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].client_id, user.client_id);
    assert_eq!(e.stats().requests, 1);

    // The controls: a vault token through the same credential, and no token, are refused.
    let vault: Arc<dyn TokenCredential> = Arc::new(ForScope {
        inner: credential,
        scope: VAULT_SCOPE,
    });
    let refused = blob_service(&azurite, &cert, Some(vault))
        .blob_client("imds-cache-sdk", "hello.txt")
        .download(None)
        .await
        .expect_err("a token for another audience must be refused");
    assert!(
        matches!(
            refused.http_status(),
            Some(StatusCode::Unauthorized | StatusCode::Forbidden)
        ),
        "{refused}"
    );
    assert_eq!(e.stats().requests, 2);
    assert!(e
        .tokens()
        .iter()
        .any(|t| t.resource == "https://vault.azure.net"));
    let anonymous = blob_service(&azurite, &cert, None)
        .blob_client("imds-cache-sdk", "hello.txt")
        .download(None)
        .await
        .expect_err("an anonymous download of a private blob must be refused");
    assert_eq!(
        anonymous.http_status(),
        Some(StatusCode::Forbidden),
        "{anonymous}"
    );
    assert_eq!(e.stats().requests, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn scopes_map_to_resources_and_errors_are_credential_errors() {
    let e = emulator(Mode::Imds, 1, |_| {});
    let client = Arc::new(client_for(&e, |_| {}));
    let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: None,
        client: Some(client.clone()),
    }))
    .unwrap();
    let token = credential.get_token(&[STORAGE_SCOPE], None).await.unwrap();
    let issued = e.tokens().pop().unwrap();
    assert_eq!(issued.resource, STORAGE, "the /.default rule");
    assert_eq!(token.token.secret(), issued.token);
    assert_eq!(token.expires_on.unix_timestamp() as u64, issued.exp);
    assert!(!format!("{token:?} {credential:?}").contains(&issued.token));
    // A second call is a hit.
    let again = credential.get_token(&[STORAGE_SCOPE], None).await.unwrap();
    assert_eq!(again.token, token.token);
    assert_eq!(e.stats().requests, 1);
    // One scope only, as a managed identity token has one audience.
    let two = credential
        .get_token(&[STORAGE_SCOPE, "https://vault.azure.net/.default"], None)
        .await
        .unwrap_err();
    assert_eq!(*two.kind(), azure_core::error::ErrorKind::Credential);
    let none = credential.get_token(&[], None).await.unwrap_err();
    assert_eq!(*none.kind(), azure_core::error::ErrorKind::Credential);
    // A malformed selector is refused when the credential is built.
    let bad = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ClientId("not-a-guid".into())),
        client: Some(client),
    }))
    .unwrap_err();
    assert_eq!(*bad.kind(), azure_core::error::ErrorKind::Credential);
    assert_eq!(e.stats().requests, 1);
}
